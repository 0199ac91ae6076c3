//! `docker-compose.yml` checked statically (no Docker engine runs here): it and the files it
//! mounts parse, every file it references exists, tidegate's environment names only settings
//! tidegate has, and the ports agree (tidegate ↔ its port mapping ↔ Prometheus' scrape targets,
//! Prometheus ↔ Grafana's datasource, Redis ↔ bull-board).

use std::path::Path;

use yaml_rust2::{Yaml, YamlLoader};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn load(path: &str) -> Yaml {
    let text = std::fs::read_to_string(Path::new(ROOT).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut docs = YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(docs.len(), 1, "{path}: one YAML document");
    docs.remove(0)
}

fn text(y: &Yaml) -> String {
    match y {
        Yaml::String(s) => s.clone(),
        Yaml::Integer(i) => i.to_string(),
        other => panic!("expected a scalar, got {other:?}"),
    }
}

/// A service's `environment` as (name, value) pairs.
fn environment(service: &Yaml) -> Vec<(String, String)> {
    service["environment"]
        .as_hash()
        .map(|h| h.iter().map(|(k, v)| (text(k), text(v))).collect())
        .unwrap_or_default()
}

/// Whether a service publishes `container_port` ("127.0.0.1:HOST:CONTAINER").
fn published(service: &Yaml, container_port: &str) -> bool {
    service["ports"]
        .as_vec()
        .into_iter()
        .flatten()
        .any(|p| text(p).rsplit(':').next() == Some(container_port))
}

#[test]
fn compose_references_only_files_that_exist() {
    let compose = load("docker-compose.yml");
    let services = compose["services"].as_hash().expect("services");
    assert!(
        [
            "mongo",
            "redis",
            "tidegate",
            "prometheus",
            "grafana",
            "bull-board",
            "demo"
        ]
        .iter()
        .all(|s| services.contains_key(&Yaml::String((*s).into()))),
        "the services the README promises"
    );
    for (name, service) in services {
        let name = text(name);
        if let Some(context) = service["build"].as_str() {
            let dockerfile = Path::new(ROOT).join(context).join("Dockerfile");
            assert!(dockerfile.is_file(), "{name}: {dockerfile:?} is missing");
        }
        for volume in service["volumes"].as_vec().into_iter().flatten() {
            let volume = text(volume);
            let host = volume.split(':').next().unwrap_or_default();
            if host.starts_with("./") {
                assert!(
                    Path::new(ROOT).join(host).exists(),
                    "{name}: mounts {host}, which does not exist"
                );
            }
        }
    }
    // The files mounted into Prometheus and Grafana parse.
    for path in [
        "deploy/prometheus.yml",
        "deploy/rules/tidegate.yml",
        "dashboards/provisioning/datasource.yml",
        "dashboards/provisioning/dashboards.yml",
    ] {
        load(path);
    }
}

#[test]
fn compose_sets_only_settings_tidegate_has_and_the_ports_agree() {
    let compose = load("docker-compose.yml");
    let services = &compose["services"];
    let known: Vec<&str> = tidegate::config::VARS.iter().map(|v| v.name).collect();
    for name in ["tidegate", "demo"] {
        let env = environment(&services[name]);
        for (var, _) in &env {
            assert!(
                known.contains(&var.as_str()),
                "{name} sets {var}, which tidegate does not read"
            );
        }
        let addr = env
            .iter()
            .find(|(k, _)| k == "TIDEGATE_HTTP_ADDR")
            .map(|(_, v)| v.clone())
            .expect("TIDEGATE_HTTP_ADDR, so that Prometheus can reach it");
        let port = addr.rsplit(':').next().expect("a port").to_owned();

        let prometheus = load("deploy/prometheus.yml");
        let targets: Vec<String> = prometheus["scrape_configs"]
            .as_vec()
            .expect("scrape_configs")
            .iter()
            .filter(|c| c["job_name"].as_str() == Some("tidegate"))
            .flat_map(|c| c["static_configs"].as_vec().cloned().unwrap_or_default())
            .flat_map(|s| s["targets"].as_vec().cloned().unwrap_or_default())
            .map(|t| text(&t))
            .collect();
        assert!(
            targets.contains(&format!("{name}:{port}")),
            "Prometheus does not scrape {name}:{port}: {targets:?}"
        );
    }
    assert!(published(&services["tidegate"], "9840"));
    // The back-office listens on all of the container's interfaces, published on loopback.
    let tidegate_env = environment(&services["tidegate"]);
    assert!(tidegate_env.contains(&("TIDEGATE_ADMIN_ADDR".into(), "0.0.0.0:9841".into())));
    assert!(published(&services["tidegate"], "9841"));

    // Grafana's datasource is the compose Prometheus, on the port it listens on.
    let datasource = load("dashboards/provisioning/datasource.yml");
    let url = datasource["datasources"][0]["url"]
        .as_str()
        .expect("datasource url");
    assert_eq!(url, "http://prometheus:9090");
    assert!(published(&services["prometheus"], "9090"));

    // Grafana's dashboard provider reads where compose mounts the dashboards.
    let provider = load("dashboards/provisioning/dashboards.yml");
    let path = provider["providers"][0]["options"]["path"]
        .as_str()
        .expect("provider path");
    let grafana_volumes: Vec<String> = services["grafana"]["volumes"]
        .as_vec()
        .expect("grafana volumes")
        .iter()
        .map(text)
        .collect();
    assert!(
        grafana_volumes
            .iter()
            .any(|v| v.contains(&format!(":{path}"))),
        "dashboards are not mounted at {path}: {grafana_volumes:?}"
    );

    // Every service that talks to Redis or MongoDB uses the compose ones.
    let redis = environment(&services["tidegate"])
        .into_iter()
        .find(|(k, _)| k == "REDIS_URL")
        .map(|(_, v)| v)
        .expect("REDIS_URL");
    let board = environment(&services["bull-board"]);
    assert!(board.contains(&("REDIS_URL".into(), redis)));
    assert!(board.contains(&("QUEUES".into(), tidegate::config::QUEUE.default.into())));
    assert!(board.contains(&(
        "PREFIX".into(),
        tidegate::config::QUEUE_PREFIX.default.into()
    )));
}
