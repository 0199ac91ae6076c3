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
    let known: Vec<&str> = tidegate_cli::vars().map(|v| v.name).collect();
    for name in ["tidegate", "demo", "govern"] {
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
    assert!(board.contains(&("QUEUES".into(), (tidegate::config::QUEUE.default)())));
    assert!(board.contains(&("PREFIX".into(), (tidegate::config::QUEUE_PREFIX.default)())));
}

/// Whether the binary takes `args` (a subcommand and its flags): clap answers `--help` after
/// them only when every one before it is known.
fn the_binary_takes(args: &[String]) -> bool {
    std::process::Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .args(args)
        .arg("--help")
        .output()
        .is_ok_and(|out| out.status.success())
}

fn strings(y: &Yaml) -> Vec<String> {
    y.as_vec()
        .map(|v| v.iter().map(text).collect())
        .unwrap_or_default()
}

/// The Dockerfile's instruction `name`'s JSON array (`CMD ["run"]`), joined over continuation
/// lines; for HEALTHCHECK, the array after its options' `CMD`.
fn dockerfile_array(name: &str) -> Vec<String> {
    let text = std::fs::read_to_string(Path::new(ROOT).join("Dockerfile")).expect("Dockerfile");
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in the Dockerfile"));
    let array = &line[line.find('[').expect("an exec-form array")..];
    serde_json::from_str(array).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn the_images_and_composes_commands_and_health_checks_are_the_binarys() {
    let entrypoint = dockerfile_array("ENTRYPOINT");
    assert_eq!(entrypoint, ["tidegate"]);
    assert!(the_binary_takes(&dockerfile_array("CMD")));
    let health = dockerfile_array("HEALTHCHECK");
    assert_eq!(health[0], "tidegate");
    assert!(the_binary_takes(&health[1..]), "{health:?}");

    let compose = load("docker-compose.yml");
    for name in ["tidegate", "demo", "govern"] {
        let service = &compose["services"][name];
        let command = strings(&service["command"]);
        let command = if command.is_empty() {
            dockerfile_array("CMD")
        } else {
            command
        };
        assert!(the_binary_takes(&command), "{name}: {command:?}");
    }
    let check = strings(&compose["services"]["tidegate"]["healthcheck"]["test"]);
    assert_eq!(check[..2], ["CMD", "tidegate"], "{check:?}");
    assert!(the_binary_takes(&check[2..]), "{check:?}");
}

#[test]
fn the_kubernetes_example_is_the_binarys() {
    let path = Path::new(ROOT).join("deploy/kubernetes/tidegate.yaml");
    let source = std::fs::read_to_string(&path).expect("the Kubernetes example");
    let docs = YamlLoader::load_from_str(&source).expect("YAML");
    let kind = |k: &str| {
        docs.iter()
            .find(|d| d["kind"].as_str() == Some(k))
            .unwrap_or_else(|| panic!("no {k}"))
    };
    let (secret, config, deployment, monitor) = (
        kind("Secret"),
        kind("ConfigMap"),
        kind("Deployment"),
        kind("PodMonitor"),
    );
    let known = |name: &str| {
        tidegate_cli::vars().any(|v| {
            v.name == name
                || (v.secret != tidegate::config::Secret::No && format!("{}_FILE", v.name) == name)
        })
    };
    let settings: Vec<(String, String)> = config["data"]
        .as_hash()
        .expect("data")
        .iter()
        .map(|(k, v)| (text(k), text(v)))
        .collect();
    for (name, _) in &settings {
        assert!(
            known(name),
            "the ConfigMap sets {name}, which tidegate does not read"
        );
    }
    let setting = |name: &str| {
        settings
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("the ConfigMap sets no {name}"))
    };
    let pod = &deployment["spec"]["template"];
    let container = &pod["spec"]["containers"][0];
    assert!(the_binary_takes(&strings(&container["args"])));
    assert_eq!(
        container["envFrom"][0]["configMapRef"]["name"].as_str(),
        config["metadata"]["name"].as_str()
    );

    // Secrets come as files, from the Secret's keys, under the secret volume's mount.
    let volume = pod["spec"]["volumes"]
        .as_vec()
        .expect("volumes")
        .iter()
        .find(|v| v["secret"]["secretName"].as_str() == secret["metadata"]["name"].as_str())
        .expect("a volume of the Secret");
    let mount = container["volumeMounts"]
        .as_vec()
        .expect("mounts")
        .iter()
        .find(|m| m["name"].as_str() == volume["name"].as_str())
        .expect("the Secret's volume mounted");
    let dir = text(&mount["mountPath"]);
    let keys: Vec<String> = secret["stringData"]
        .as_hash()
        .expect("stringData")
        .keys()
        .map(text)
        .collect();
    for env in container["env"].as_vec().expect("env") {
        let name = text(&env["name"]);
        assert!(
            known(&name),
            "the container sets {name}, which tidegate does not read"
        );
        let file = text(&env["value"]);
        let key = file
            .strip_prefix(&format!("{dir}/"))
            .unwrap_or_else(|| panic!("{name}={file} is not under {dir}"));
        assert!(
            keys.contains(&key.to_owned()),
            "{name}: no key {key} in the Secret"
        );
    }

    // Probes and scrapes on TIDEGATE_HTTP_ADDR's port, at paths it serves.
    let port: i64 = setting("TIDEGATE_HTTP_ADDR")
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port");
    let port_name = text(&container["ports"][0]["name"]);
    assert_eq!(container["ports"][0]["containerPort"].as_i64(), Some(port));
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(text(&container[probe]["httpGet"]["path"]), path);
        assert_eq!(text(&container[probe]["httpGet"]["port"]), port_name);
    }
    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(text(&annotations["prometheus.io/port"]), port.to_string());
    assert_eq!(text(&annotations["prometheus.io/path"]), "/metrics");
    assert_eq!(
        text(&monitor["spec"]["podMetricsEndpoints"][0]["port"]),
        port_name
    );
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"],
        "the PodMonitor selects the pods"
    );

    // The pod gets longer to stop than tidegate gives its in-flight batches.
    let shutdown =
        humantime::parse_duration(&setting("TIDEGATE_SHUTDOWN_TIMEOUT")).expect("a duration");
    let grace = pod["spec"]["terminationGracePeriodSeconds"]
        .as_i64()
        .expect("a grace period");
    assert!(grace as u64 > shutdown.as_secs() + 5, "{grace} s");
}
