#!/usr/bin/env python3
"""Print a generated topology with N services, for benchmarks.

Shape: one network with three tiers, services in layers of 100 that depend
on two services of the previous layer (healthy), each with ports, health,
metrics, resources, env, a secret and a volume; every tenth service is a
clustered one; one balancer routes to 200 of them; monitoring with alerts.
"""
import sys

n = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
out = sys.stdout.write
out('stack "generated" version="1.0.0" {\n    description "benchmark topology"\n}\n')
out('network "net" subnet="10.0.0.0/8" {\n')
out('    tier "data" subnet="10.1.0.0/16"\n    tier "apps" subnet="10.2.0.0/16"\n')
out('    tier "edge" subnet="10.3.0.0/24"\n    tier "monitoring" subnet="10.4.0.0/24"\n}\n')
out('env "prod" production=#true {\n    publish-bind "0.0.0.0"\n}\n')
layer = 100
for i in range(n):
    tier = "data" if i < layer else "apps"
    out(f'service "svc-{i}" tier="{tier}" {{\n')
    out(f'    image "registry.example.com/team/svc-{i}:1.{i % 7}.0"\n')
    out('    port 8080\n    port 9090 name="metrics"\n')
    out(f'    env "SERVICE_NAME" "svc-{i}"\n    env "LOG_LEVEL" "info"\n')
    out(f'    secret "DB_PASSWORD" from="env:SVC_{i}_DB_PASSWORD"\n')
    out(f'    volume "data-{i}" path="/var/lib/svc"\n')
    out('    health http="/health" port=8080 interval="10s" timeout="3s" retries=3\n')
    out('    metrics path="/metrics" port=9090\n')
    out('    resources cpu="250m" memory="256Mi"\n')
    if i % 10 == 0:
        out('    cluster "active-active" replicas=3 backup-count=1\n')
    if i >= layer:
        base = (i // layer - 1) * layer
        a = base + (i % layer)
        b = base + ((i * 7) % layer)
        deps = f'"svc-{a}"' if a == b else f'"svc-{a}" "svc-{b}"'
        out(f'    depends-on {deps} condition="healthy"\n')
    out('}\n')
out('balancer "edge" tier="edge" {\n    listen 80 public=#true\n')
out('    rate-limit "general" rate="100r/s" burst=200\n')
for i in range(0, min(n, 200)):
    out(f'    route "/api/svc-{i}" to="svc-{i}" limit="general"\n')
out('}\n')
out('monitoring tier="monitoring" {\n    prometheus scrape-interval="15s" retention="15d"\n    grafana dashboards=#true\n')
for i in range(20):
    out(f'    alert "Generated{i}" expr="rate(http_requests_total{{code=~\\"5..\\"}}[5m]) > {i}" for="5m" severity="warning"\n')
out('}\n')
