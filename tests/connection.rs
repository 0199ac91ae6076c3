//! The connection strings are authoritative: MongoDB's names the database and its own options
//! (pool, time limits, application name, write concern) win over tidegate's settings, which
//! fill only what it does not say; TLS as either URI asks (`rediss://`, `tls=true`) works.

mod common;

use std::time::Duration;

use common::scenario::{self, Server, free_port, listening};
use mongodb::bson::{Document, doc};
use mongodb::options::ConnectionString;
use tidegate::queue::{NewJob, Queue, connect};
use tidegate::store::{Store, StoreOptions};

/// `uri` naming the database `database`, with `options` added to its own.
fn with_database(uri: &str, database: &str, options: &str) -> String {
    let (scheme, rest) = uri.split_once("://").expect("a URI");
    let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
    let hosts = before_query.split('/').next().unwrap_or_default();
    let query = [query, options]
        .iter()
        .filter(|q| !q.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("&");
    format!("{scheme}://{hosts}/{database}?{query}")
}

#[test]
fn the_uris_own_options_win_and_the_settings_fill_the_rest() {
    let uri = ConnectionString::parse(
        "mongodb://db1,db2/prod?replicaSet=rs0&maxPoolSize=7&connectTimeoutMS=1500&appName=team&w=majority",
    )
    .expect("a connection string");
    let settings = StoreOptions {
        pool_size: 50,
        selection_timeout: Duration::from_secs(9),
        write_concern: Some(mongodb::options::WriteConcern::nodes(1)),
        ..StoreOptions::default()
    };
    let (options, said) = settings.under(&uri);
    assert_eq!(options.pool_size, 7);
    assert_eq!(options.connect_timeout, Duration::from_millis(1500));
    assert_eq!(options.selection_timeout, Duration::from_secs(9), "filled");
    assert_eq!(options.app_name, "team");
    assert_eq!(
        options.write_concern.and_then(|w| w.w),
        Some(mongodb::options::Acknowledgment::Majority)
    );
    assert_eq!(
        said,
        ["maxPoolSize", "connectTimeoutMS", "appName", "w"],
        "what the URI said"
    );
    let (plain, said) = StoreOptions::default()
        .under(&ConnectionString::parse("mongodb://db1/").expect("a connection string"));
    assert!(said.is_empty());
    assert_eq!((plain.pool_size, plain.app_name.as_str()), (50, "tidegate"));
}

#[tokio::test]
async fn the_uris_write_concern_reaches_the_bulk_writes_and_its_read_preference_the_reads() {
    let uri = with_database(
        &common::mongodb_uri(),
        "unused",
        "w=majority&readPreference=secondaryPreferred",
    );
    let store = Store::connect(&uri, "unused", StoreOptions::default())
        .await
        .expect("connect");
    assert!(
        matches!(
            store.client().selection_criteria(),
            Some(mongodb::options::SelectionCriteria::ReadPreference(
                mongodb::options::ReadPreference::SecondaryPreferred { .. }
            ))
        ),
        "{:?}",
        store.client().selection_criteria()
    );
    let command = store.update_command("c", &[doc! { "q": {}, "u": {} }]);
    assert_eq!(
        command
            .get_document("writeConcern")
            .expect("a write concern"),
        &doc! { "w": "majority" }
    );
    let store = Store::connect(&common::mongodb_uri(), "unused", StoreOptions::default())
        .await
        .expect("connect");
    let command = store.update_command("c", &[doc! { "q": {}, "u": {} }]);
    assert!(
        !command.contains_key("writeConcern"),
        "the server's default"
    );
}

#[test]
fn config_says_the_uri_won() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidegate"))
        .arg("config")
        .env(
            "MONGODB_URI",
            "mongodb://app:s3cret@db1:27017/prod?maxPoolSize=7&w=majority",
        )
        .env("TIDEGATE_DATABASE", "tidegate_other")
        .env_remove("TIDEGATE_MONGODB_POOL_SIZE")
        .output()
        .expect("tidegate config");
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = |var: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("{var} ")))
            .unwrap_or_else(|| panic!("no {var} in {stdout}"))
            .to_owned()
    };
    let database = line("TIDEGATE_DATABASE");
    assert!(
        database.contains(" prod ") && database.contains("(MONGODB_URI; the variable is ignored)"),
        "{database}"
    );
    let pool = line("TIDEGATE_MONGODB_POOL_SIZE");
    assert!(
        pool.contains(" 7 ") && pool.contains("(MONGODB_URI)"),
        "{pool}"
    );
    assert!(line("TIDEGATE_WRITE_CONCERN").contains("Majority"));
    assert!(!stdout.contains("s3cret"));
}

#[tokio::test]
async fn the_jobs_write_to_the_database_the_uri_names() {
    let named = common::unique("tidegate_uri_db");
    let other = common::unique("tidegate_env_db");
    let uri = with_database(&common::mongodb_uri(), &named, "appName=team&maxPoolSize=7");
    let queue = common::unique("uri_db");
    let q = Queue::new(
        connect(&common::redis_url()).await.expect("redis"),
        "bull",
        &queue,
    );
    let jobs: Vec<NewJob> = (0..5)
        .map(|i| NewJob::new("upsert", scenario::upsert_data(i, "none")))
        .collect();
    q.add_bulk(&jobs).await.expect("add");
    let process = scenario::start(
        scenario::command(&queue, &other, &common::redis_url(), &uri)
            .env("TIDEGATE_BUDGET", common::unique("uri_db")),
    );
    common::eventually("the jobs to complete", Duration::from_secs(60), || async {
        q.counts().await.ok().filter(|c| c.completed == 5).map(drop)
    })
    .await;
    drop(process);
    let store = |db: String| async move {
        Store::connect(&common::mongodb_uri(), &db, StoreOptions::default())
            .await
            .expect("connect")
    };
    let written = store(named).await;
    let effects = written.database().collection::<Document>("effects");
    assert_eq!(effects.count_documents(doc! {}).await.expect("count"), 5);
    let elsewhere = store(other).await;
    assert!(
        elsewhere
            .database()
            .list_collection_names()
            .await
            .expect("collections")
            .is_empty(),
        "nothing in TIDEGATE_DATABASE when the URI names one"
    );
    written.database().drop().await.expect("drop");
}

/// A CA and a certificate for 127.0.0.1 it signed, made with openssl in `dir`: (ca, cert, key).
fn certificates(dir: &std::path::Path) -> (String, String, String) {
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let openssl = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=tidegate test CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=localhost",
    ]);
    std::fs::write(
        dir.join("ext"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    .expect("ext");
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext",
    ]);
    (path("ca.pem"), path("server.pem"), path("server.key"))
}

#[tokio::test]
async fn rediss_and_a_tls_mongodb_uri_work_and_an_unknown_issuer_is_refused() {
    let dir = std::env::temp_dir().join(common::unique("tidegate_tls"));
    std::fs::create_dir_all(&dir).expect("dir");
    let (ca, cert, key) = certificates(&dir);
    // A Redis with a plain port for the test and a TLS port for tidegate.
    let tls_port = free_port();
    let redis = {
        let (cert, key, ca) = (cert.clone(), key.clone(), ca.clone());
        Server::start("redis-server", move |port, dir| {
            let mut args = scenario::aof_redis_args(port, dir);
            args.extend(
                [
                    "--tls-port",
                    &tls_port.to_string(),
                    "--tls-cert-file",
                    &cert,
                    "--tls-key-file",
                    &key,
                    "--tls-ca-cert-file",
                    &ca,
                    "--tls-auth-clients",
                    "no",
                ]
                .map(str::to_owned),
            );
            args
        })
    };
    listening(tls_port).await;
    // A MongoDB-compatible server (FerretDB) likewise, when this machine builds one.
    let ferretdb = std::env::var("FERRETDB_BIN").ok().map(|bin| {
        let plain_port = free_port();
        let (cert, key) = (cert.clone(), key.clone());
        let server = Server::start(&bin, move |port, dir| {
            let mut args = scenario::ferretdb_args(dir);
            args.extend([
                format!("--listen-addr=127.0.0.1:{plain_port}"),
                format!("--listen-tls=127.0.0.1:{port}"),
                format!("--listen-tls-cert-file={cert}"),
                format!("--listen-tls-key-file={key}"),
            ]);
            args
        });
        (server, plain_port)
    });
    let (mongodb_uri, plain_mongodb) = match &ferretdb {
        Some((server, plain_port)) => {
            listening(server.port).await;
            (
                format!(
                    "mongodb://127.0.0.1:{}/?tls=true&tlsCAFile={ca}",
                    server.port
                ),
                format!("mongodb://127.0.0.1:{plain_port}"),
            )
        }
        None => (common::mongodb_uri(), common::mongodb_uri()),
    };
    let rediss = format!("rediss://127.0.0.1:{tls_port}");
    let plain_redis = format!("redis://127.0.0.1:{}", redis.port);
    let queue = common::unique("tls");
    let database = common::unique("tidegate_tls");
    let q = Queue::new(connect(&plain_redis).await.expect("redis"), "bull", &queue);
    let jobs: Vec<NewJob> = (0..3)
        .map(|i| NewJob::new("upsert", scenario::upsert_data(i, "none")))
        .collect();
    q.add_bulk(&jobs).await.expect("add");

    // The CA the URIs' servers use is trusted (SSL_CERT_FILE for rediss://, tlsCAFile for
    // MongoDB): the jobs run through both over TLS.
    let process = scenario::start(
        scenario::command(&queue, &database, &rediss, &mongodb_uri)
            .env("SSL_CERT_FILE", &ca)
            .env("TIDEGATE_BUDGET", common::unique("tls")),
    );
    common::eventually(
        "the jobs to complete over TLS",
        Duration::from_secs(60),
        || async { q.counts().await.ok().filter(|c| c.completed == 3).map(drop) },
    )
    .await;
    drop(process);
    common::assert_each_effect_once(&plain_mongodb, &database, 3).await;

    // Not trusted: start-up stops, saying why.
    let out = scenario::command(&queue, &database, &rediss, &mongodb_uri)
        .env("SSL_CERT_FILE", dir.join("server.pem"))
        .env("TIDEGATE_START_TIMEOUT", "2s")
        .stderr(std::process::Stdio::piped())
        .output()
        .expect("tidegate");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("certificate"), "{stderr}");
    drop(ferretdb);
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);
}
