//! Stable diagnostic codes and their long explanations (`stackc explain`).
//!
//! A code never changes meaning once published: scripts match on it.

macro_rules! codes {
    ($( $variant:ident => $name:literal, $title:literal, $explain:literal; )*) => {
        /// A stable diagnostic code, shown as `stackc::<name>`.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Code { $( $variant, )* }

        impl Code {
            pub const ALL: &'static [Code] = &[ $( Code::$variant, )* ];

            /// The short name, e.g. `unknown-property`.
            pub fn name(self) -> &'static str {
                match self { $( Code::$variant => $name, )* }
            }

            /// One line saying what the code is about.
            pub fn title(self) -> &'static str {
                match self { $( Code::$variant => $title, )* }
            }

            /// The long explanation: what it checks, why, and an example.
            pub fn explanation(self) -> &'static str {
                match self { $( Code::$variant => $explain, )* }
            }
        }
    };
}

impl Code {
    /// The full code as printed: `stackc::unknown-property`.
    pub fn full(self) -> String {
        format!("stackc::{}", self.name())
    }

    /// Look a code up by `name` or `stackc::name`.
    pub fn parse(s: &str) -> Option<Code> {
        let s = s.strip_prefix("stackc::").unwrap_or(s);
        Code::ALL.iter().copied().find(|c| c.name() == s)
    }
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stackc::{}", self.name())
    }
}

codes! {
    MissingFile => "missing-file", "the topology file or an import cannot be read",
"## What it checks
The file named on the command line (default `stack.kdl`) and every imported
fragment must exist and be readable.

## Why
Nothing can be checked without the source.

## Example
    stackc check does-not-exist.kdl
Fix: pass the right path, or run stackc in the directory holding `stack.kdl`.";

    NotUtf8 => "not-utf8", "the file is not UTF-8 text",
"## What it checks
KDL documents are UTF-8. A file with invalid UTF-8 bytes is rejected and the
first bad byte is shown.

## Why
Guessing an encoding would silently change names and values that end up in
generated configs.

## Example
A file saved as Latin-1 containing `café`. Fix: re-save it as UTF-8.";

    EmptyInput => "empty-input", "the topology file is empty",
"## What it checks
A topology must contain at least a `stack` node.

## Example
An empty `stack.kdl`. Fix: start with
    stack \"shop\" version=\"1.0.0\"";

    TooLarge => "too-large", "the input is larger than stackc accepts",
"## What it checks
Topology files and fragments are limited to 64 MiB each, and to 500,000
nodes and values (arguments and properties) each.

## Why
A topology of 10,000 services is about 3 MB; anything far larger is almost
certainly not a topology, and reading it would waste memory.";

    Syntax => "syntax", "the file is not valid KDL 2.0",
"## What it checks
The file must parse as a KDL 2.0 document. The diagnostic shows the parser's
message at the exact position.

## Example
    service \"web\" {
        image \"nginx:1.25\"
    // missing closing brace
Fix: close every `{` and terminate every string.";

    UnknownNode => "unknown-node", "a node that stackc does not know at this place",
"## What it checks
Every node name must be one the language defines at that position (for
example `image` inside `service`). The closest known name is suggested.

## Why
A misspelt node would otherwise be ignored silently, and the setting lost.

## Example
    service \"web\" { imagee \"nginx:1.25\" }
Fix: `image \"nginx:1.25\"`.";

    UnknownProperty => "unknown-property", "a property that this node does not take",
"## What it checks
Every `key=value` property must be one the node defines. The closest known
key is suggested.

## Example
    health http=\"/health\" intervall=\"10s\"
Fix: `interval=\"10s\"`.";

    DuplicateProperty => "duplicate-property", "the same property is given twice on one node",
"## What it checks
KDL lets the last of two equal keys win; stackc rejects the node instead,
because one of the two values is a mistake and it cannot know which.

## Example
    port 8080 public=#true public=#false
Fix: keep one.";

    DuplicateNode => "duplicate-node", "a setting that may appear once is given twice",
"## What it checks
Nodes such as `image`, `health` or `cluster` may appear once per service.

## Example
    service \"web\" { image \"a:1\"; image \"b:2\" }
Fix: keep one; to vary it per environment use an `env` override.";

    DuplicateName => "duplicate-name", "two objects of one kind share a name",
"## What it checks
Services, tiers, balancers, routes, rate limits, environments, alerts, jobs and
phases must have unique names (routes: unique paths per balancer). The
containers stackc names itself must not take another's name either: cluster
members (NAME-0, NAME-1, ...), next-version instances (NAME-next), exporters
(NAME-KIND-exporter) and balancer replicas.

## Why
Names become container, upstream, job and object names; two equal names would
overwrite each other in the generated artifacts.

## Example
    service \"api\" { ... }
    service \"api\" { ... }
Fix: rename one, or use `override \"api\" { ... }` to change an imported service.";

    MissingArgument => "missing-argument", "a required argument is missing",
"## What it checks
Nodes that name something (`service \"web\"`) or carry a value (`image
\"nginx:1.25\"`) need that argument.

## Example
    service { image \"nginx:1.25\" }
Fix: `service \"web\" { ... }`.";

    UnexpectedArgument => "unexpected-argument", "an argument this node does not take",
"## What it checks
Extra positional values are rejected rather than ignored.

## Example
    image \"nginx:1.25\" \"nginx:1.26\"
Fix: keep one value.";

    MissingProperty => "missing-property", "a required property or setting is missing",
"## What it checks
Some properties are required: a route needs `to=`, a volume `path=`,
a rate limit needs `rate=`, a tier needs `subnet=`.

## Example
    route \"/api\"
Fix: `route \"/api\" to=\"api\"`.";

    UnexpectedChildren => "unexpected-children", "a node that takes no children block has one",
"## Example
    image \"nginx:1.25\" { tag \"x\" }
Fix: remove the block.";

    MissingNode => "missing-node", "a required node is missing",
"## What it checks
A topology needs one `stack` node; a service needs an `image`.

## Example
A file with services but no `stack \"name\"` line.";

    WrongType => "wrong-type", "a value has the wrong type",
"## What it checks
Each argument and property has one type: string, integer, number or boolean.
KDL 2.0 writes booleans as `#true` / `#false`.

## Example
    port \"8080\"          // a string
    public=\"yes\"       // a string, not a boolean
Fix: `port 8080`, `public=#true`. (A bare `true` is a KDL 2.0 syntax error:
booleans are written `#true` and `#false`.)";

    OutOfRange => "out-of-range", "a number is outside its allowed range",
"## What it checks
Ports are 1-65535, replicas and nodes at least 1, percentages 1-100, ratios
0-1, retries at least 1, and so on; the message gives the range.

## Example
    port 70000
Fix: a port between 1 and 65535.";

    InvalidDuration => "invalid-duration", "a duration that cannot be read or is not positive",
"## What it checks
Durations are written as a number and a unit, optionally chained:
`500ms`, `10s`, `5m`, `1h30m`, `15d`. Units: ms, s, m, h, d, w, y. They must
be greater than zero.

## Example
    health cmd=\"true\" interval=\"10 seconds\"
Fix: `interval=\"10s\"`.";

    InvalidQuantity => "invalid-quantity", "a memory or CPU quantity that cannot be read",
"## What it checks
Memory uses Kubernetes units: `512Mi`, `1Gi`, `1G`, `100M` or plain bytes.
CPU is a number of cores (`0.5`, `2`) or millicores (`500m`). Zero is rejected.

## Example
    resources memory=\"1GB\"
Fix: `memory=\"1Gi\"` (or `1G` for powers of ten).";

    InvalidValue => "invalid-value", "a value that is not one of the accepted forms",
"## What it checks
Settings with a fixed set of values (cluster strategy, health condition,
rollout strategy, algorithm, protocol, ...) or a fixed form (rates like
`10r/s`, rate-limit keys like `ip` or `header:X-API-Key`, cron schedules).
The message lists what is accepted and suggests the closest.

## Example
    cluster \"active-pasive\"
Fix: `cluster \"active-passive\"`.";

    InvalidSteps => "invalid-steps", "rollout steps are not increasing or do not end at 100",
"## What it checks
Rollout steps are the percentages of traffic sent to the new version at each
step: each between 1 and 100, strictly increasing, and the last one 100 so
the rollout completes.

## Example
    steps 25 75 50
Fix: `steps 25 50 75 100`.";

    InvalidName => "invalid-name", "a name that is not a safe identifier",
"## What it checks
Names of services, tiers, balancers, environments, stacks, volumes and jobs
become container names, DNS names, nginx upstream names and Kubernetes object
names: they must be DNS-1123 labels (lowercase letters, digits and `-`,
starting and ending with a letter or digit, at most 63 characters). Alert
names and label keys must be Prometheus identifiers; environment variable
names must be shell identifiers.

## Why
A name with a newline, `;`, `{`, `}`, `$`, a quote or a path separator could
inject directives into a generated nginx, YAML or shell file.

## Example
    service \"Web_API\"
Fix: `service \"web-api\"`.";

    UnsafeValue => "unsafe-value", "a value contains characters that could inject into a generated config",
"## What it checks
Values that reach nginx, YAML, shell, PromQL or Kubernetes are restricted to
what their target can carry safely: paths start with `/` and contain no
whitespace, quotes, `;`, `{`, `}`, `$`, `\\` or `..`; images use only image
reference characters; no value may contain a newline or a NUL.

## Example
    route \"/api; return 200\" to=\"api\"
Fix: a plain path such as `/api`.";

    UnknownService => "unknown-service", "a reference to a service that does not exist",
"## What it checks
Services named in `depends-on`, routes' `to=`, phases' `services=` and
drift-ignore rules must be declared (or imported). The closest name is suggested.

## Example
    depends-on \"postgress\"
Fix: `depends-on \"postgres\"`.";

    UnknownAccount => "unknown-account", "a reference to a service account that is not declared",
"## What it checks
`service-account=` on services and jobs must name a `service-account` of the
`kubernetes` block.

## Example
    kubernetes namespace=\"shop\" { service-account \"deployer\" { ... } }
    job \"backup\" service-account=\"deploy\" ...
Fix: `service-account=\"deployer\"`.";

    UndeclaredPort => "undeclared-port", "a probe or metrics endpoint on a port the service does not declare",
"## What it checks
`health http=... port=N`, `health tcp=N` and `metrics port=N` must use one of
the service's `port` nodes.

## Why
Targets open, publish and allow (network policies) only declared ports: a
probe on another port never succeeds.

## Example
    port 8080
    health http=\"/health\" port=8081
Fix: `port=8080`, or declare `port 8081`.";

    UnknownTier => "unknown-tier", "a reference to a tier that the network does not define",
"## What it checks
`tier=` on services, balancers and monitoring, and `tiers=` on phases, must
name a `tier` of the `network`.

## Example
    service \"api\" tier=\"service\"
Fix: `tier=\"services\"`.";

    UnknownRateLimit => "unknown-rate-limit", "a route names a rate limit that its balancer does not define",
"## Example
    rate-limit \"general\" rate=\"100r/s\"
    route \"/api\" to=\"api\" limit=\"genral\"
Fix: `limit=\"general\"`.";

    UnknownEnv => "unknown-env", "the selected environment is not defined",
"## What it checks
`--env NAME` must name an `env` block of the topology.

## Example
    stackc check --env production   # the topology defines `prod`";

    DependencyCycle => "dependency-cycle", "services depend on each other in a cycle",
"## What it checks
`depends-on` edges must form a directed acyclic graph, or no start order
exists. The whole cycle is shown, in order.

## Example
    service \"a\" { depends-on \"b\" }
    service \"b\" { depends-on \"a\" }
Fix: remove one edge; often one side only needs `condition=\"started\"` at
runtime and no declared dependency at all.";

    InvalidSubnet => "invalid-subnet", "a subnet that does not parse or has host bits set",
"## What it checks
Subnets are IPv4 CIDR blocks such as `172.21.1.0/24`, written with the
network address (no host bits set).

## Example
    tier \"services\" subnet=\"172.21.10.5/24\"
Fix: `subnet=\"172.21.10.0/24\"`.";

    SubnetOverlap => "subnet-overlap", "two tier ranges overlap",
"## What it checks
Each tier has its own range; two tiers sharing addresses would hand the same
address to two containers.

## Example
    tier \"a\" subnet=\"10.1.0.0/16\"
    tier \"b\" subnet=\"10.1.2.0/24\"";

    SubnetOutside => "subnet-outside", "a tier range lies outside the network",
"## Example
    network \"net\" subnet=\"172.21.0.0/16\" { tier \"x\" subnet=\"172.22.0.0/24\" }";

    SubnetTooSmall => "subnet-too-small", "a tier range has fewer addresses than its containers need",
"## What it checks
Every container placed in a tier gets an address from the tier's range: all
replicas of its services and balancers (twice for services with a rollout
policy, which run two versions side by side during a rollout), plus the
network and broadcast addresses and the gateway.

## Example
    tier \"services\" subnet=\"10.0.0.0/30\"   // 4 addresses, 1 usable
with a service of 3 replicas.";

    LiteralSecret => "literal-secret", "a secret value is written in the topology",
"## What it checks
Secrets are references: `secret \"DB_PASSWORD\" from=\"env:PG_PASSWORD\"` or
`from=\"file:/run/secrets/pg\"`. A literal value, or an `env` variable whose
name says it holds a secret (PASSWORD, SECRET, TOKEN, API_KEY, PRIVATE_KEY),
is rejected.

## Why
Topologies and generated artifacts are committed to git; a value written there
is leaked.";

    InvalidSecretSource => "invalid-secret-source", "a secret reference that is not env: or file:",
"## Example
    secret \"DB_PASSWORD\" from=\"vault:db\"
Fix: `from=\"env:DB_PASSWORD\"` or `from=\"file:/run/secrets/db\"`.";

    PhaseOrder => "phase-order", "an explicit phase list disagrees with the dependency graph",
"## What it checks
With an explicit `phases` block, every service must start in a later phase
than the services it depends on (the same phase is allowed only for
`condition=\"started\"`).

## Example
    phases { phase \"apps\" services=\"api\"; phase \"data\" services=\"db\" }
with `api` depending on `db`. Fix: put `data` first.";

    PhaseMissing => "phase-missing", "an explicit phase list leaves a service out",
"## What it checks
Every service, balancer and monitoring component must belong to exactly one
phase when phases are listed explicitly.";

    PhaseDuplicate => "phase-duplicate", "a service belongs to two phases",
"## What it checks
A component named in `services=` of two phases, or a tier listed in two
phases. (A component named in `services=` is taken out of its tier's phase:
that is how one service of a tier is started earlier.)

## Example
    phase \"a\" services=\"api\"
    phase \"b\" services=\"api, worker\"";

    ImportNotFound => "import-not-found", "an imported fragment cannot be found",
"## What it checks
`import \"NAME\"` looks for `stacks/NAME.kdl` in the topology's directory and
each parent directory; `import \"./file.kdl\"` is relative to the importing
file.";

    ImportCycle => "import-cycle", "fragments import each other in a cycle",
"## Example
    // stacks/a.kdl
    import \"b\"
    // stacks/b.kdl
    import \"a\"";

    ImportPath => "import-path", "an import path leaves the topology's directory",
"## What it checks
Relative imports may not contain `..`, be absolute, or name a non-`.kdl`
file; fragment names contain only letters, digits, `-` and `_`.

## Why
A topology from an untrusted source must not be able to read arbitrary files.";

    ImportContent => "import-content", "a fragment contains a node that fragments may not define",
"## What it checks
Fragments define reusable `service`, `balancer`, `monitoring` and `job` nodes
(and may import other fragments). `stack`, `network`, `env` and `phases`
belong to the topology.";

    OverrideUnknown => "override-unknown", "an override names a service that does not exist",
"## Example
    override \"postgress\" { image \"postgres:15\" }";

    ClusterSize => "cluster-size", "a clustering strategy cannot work with the given size",
"## What it checks
active-passive and primary-replica need at least 2 replicas; quorum needs an
odd number of at least 3 nodes (an even count tolerates no more failures than
one node fewer, and risks split votes); sharded needs at least 2 shards;
backup-count must be below the replica count and at most 6.";

    AutoscaleRange => "autoscale-range", "autoscaling bounds are inconsistent",
"## What it checks
`min` is at least 1, `max` at least `min`, at least one target (cpu or memory)
is given, and the replica count of the cluster lies within the bounds.";

    HealthCheck => "health-check", "a health check is incomplete or ambiguous",
"## What it checks
A `health` node has exactly one of `cmd=`, `http=` (with `port=`) or `tcp=`.

## Example
    health http=\"/health\"
Fix: `health http=\"/health\" port=8080`.";

    PortConflict => "port-conflict", "two ports publish on the same host port",
"## What it checks
A host port can be published once per address. Two services (or a service and
a balancer listener) publishing the same host port would fail at start.";

    ImageTag => "image-tag", "an image without a tag or with :latest",
"## Why (warning)
`:latest` and untagged images change under you: two builds of the same
topology would run different software, and drift detection cannot tell.
Pin a version tag or a digest.";

    PublicPort => "public-port", "a port published on all addresses outside production",
"## Why (warning)
In a non-production environment a port bound to 0.0.0.0 exposes a
development service to the whole network. Bind to 127.0.0.1 or mark the
environment `production=#true`.";

    HealthMissing => "health-missing", "a dependency waits for health that is never reported",
"## Why (warning)
`depends-on \"db\" condition=\"healthy\"` waits for a health status, but `db`
has no `health` node: the dependent will never start (compose) or starts
without waiting (other targets). Add a health check to the dependency.";

    Unmapped => "unmapped", "a setting that a target cannot express",
"## Why (warning)
Every topology setting is either mapped onto each target where it has a
meaning, or reported: other converters drop health checks and dependencies
silently. The warning names the setting and the target; docs/targets.md has
the full capability table.

## Example
`autoscale` on the docker-compose target: compose has no autoscaler, so the
service runs its `replicas` count.";

    UnknownJob => "unknown-job", "an alert selects a scrape job or service that does not exist",
"## What it checks
In user alert expressions, `job=\"X\"` must name a scrape job stackc
generates (`<service>` for a metrics endpoint, `<service>-exporter`,
`<balancer>-nginx`, host exporters by kind, `prometheus`), and
`service=\"X\"` a declared service.

## Why
An alert on a job that is never scraped has no series: it never fires,
and nobody notices until the outage it was meant to catch.";

    RouteWithoutHealth => "route-without-health", "a balancer routes to a service without a health check",
"## Why (warning)
nginx then notices a dead upstream only after failed requests, `apply`
cannot wait for the service before starting the balancer, and rollouts
have no health to gate on.";

    MetricsUnscraped => "metrics-unscraped", "a service exposes metrics but the topology has no monitoring",
"## Why (warning)
Without a `monitoring` block no Prometheus is generated, so the declared
endpoint is never read. Add monitoring (or import \"observability\").";

    UnusedRateLimit => "unused-rate-limit", "a rate limit that no route uses",
"## Why (warning)
A declared but unused rate limit protects nothing; it is usually a misspelt
`limit=` on a route.";
}
