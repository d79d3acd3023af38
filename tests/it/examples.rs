//! The seed systems under examples/: each checks clean in every one of its
//! environments, and the graph shows the phase order the seed describes.

use crate::support::{root, run, stackc};

fn examples() -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(root().join("examples"))
        .expect("examples/")
        .map(|e| e.expect("entry").path().join("stack.kdl"))
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

#[test]
fn the_five_seed_systems_are_examples() {
    assert_eq!(examples().len(), 5, "{:?}", examples());
}

#[test]
fn every_example_checks_clean_in_every_environment() {
    for file in examples() {
        let checked = stackc::check_file(&file, None);
        assert!(
            checked.ok(),
            "{}:\n{}",
            file.display(),
            stackc::diag::render_plain(&checked.diags, &checked.sources)
        );
        let envs: Vec<String> = checked
            .topology
            .as_ref()
            .expect("model")
            .environments
            .iter()
            .map(|e| e.name.value.clone())
            .collect();
        for env in envs {
            let c = stackc::check_file(&file, Some(&env));
            assert!(
                c.ok(),
                "{} --env {env}:\n{}",
                file.display(),
                stackc::diag::render_plain(&c.diags, &c.sources)
            );
        }
    }
}

fn phase_names(example: &str) -> Vec<String> {
    let c = stackc::check_file(
        &root().join("examples").join(example).join("stack.kdl"),
        None,
    );
    c.graph
        .expect("graph")
        .phases
        .iter()
        .map(|p| p.name.clone())
        .collect()
}

#[test]
fn eip_resso_starts_in_the_seed_order() {
    assert_eq!(
        phase_names("eip-resso"),
        ["infrastructure", "monitoring", "config", "services", "edge"]
    );
    let r = run(stackc().args(["graph", "examples/eip-resso/stack.kdl"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(
        lines[1].contains("infrastructure: consul, elasticsearch, postgres, redis"),
        "{}",
        r.stdout
    );
    assert!(lines[3].contains("config: config-server"), "{}", r.stdout);
}

#[test]
fn eip_resso_prod_env_overrides_replicas() {
    let f = root().join("examples/eip-resso/stack.kdl");
    let dev = stackc::check_file(&f, Some("dev")).topology.expect("model");
    let prod = stackc::check_file(&f, Some("prod"))
        .topology
        .expect("model");
    assert_eq!(dev.service("user-management").expect("svc").instances(), 3);
    assert_eq!(prod.service("user-management").expect("svc").instances(), 4);
    // Imported fragments take the tier set by the topology's override.
    assert_eq!(
        dev.service("postgres")
            .expect("svc")
            .tier
            .as_ref()
            .expect("tier")
            .value,
        "infrastructure"
    );
}
