//! The shards behind a `mongos`, for probing them instead of the router: each shard's replica
//! set and seed hosts from a `listShards` reply, and the client options that reach its primary
//! with the router's credentials and TLS. Pure: no I/O here.
//!
//! Through a router, `serverStatus` describes the router (its own CPU, no tickets), so the
//! database's load can only be read on the shards. Not wired into a probe yet; the plan is in
//! the README's load control section.

use mongodb::bson::{Bson, Document};
use mongodb::options::{ClientOptions, ServerAddress};

/// One shard as `listShards` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    /// The shard's name (`_id`); `config` for 8.0's config shard, which holds data too.
    pub id: String,
    /// The shard's replica set; `None` for a standalone shard (unsupported since 3.6, but an
    /// old cluster may still list one).
    pub replica_set: Option<String>,
    /// `host:port` of the members the router knows, in its order.
    pub seeds: Vec<String>,
    /// Being removed: its chunks are moving away, but it still takes writes until they have.
    pub draining: bool,
}

/// The shards in a `listShards` reply, in its order. An error names what is not as expected:
/// a probe cannot leave out a shard it does not understand, since that one may be the busiest.
pub fn shards(list_shards: &Document) -> Result<Vec<Shard>, String> {
    let entries = list_shards
        .get_array("shards")
        .map_err(|_| "listShards reply without a `shards` array".to_owned())?;
    entries
        .iter()
        .map(|entry| match entry {
            Bson::Document(shard) => shard_of(shard),
            other => Err(format!("listShards entry is not a document: {other}")),
        })
        .collect()
}

fn shard_of(entry: &Document) -> Result<Shard, String> {
    let id = entry
        .get_str("_id")
        .map_err(|_| format!("listShards entry without a string `_id`: {entry}"))?;
    let host = entry
        .get_str("host")
        .map_err(|_| format!("shard {id} has no string `host`"))?;
    // "rs/h1:p,h2:p" for a replica set, "h:p" for a standalone.
    let (replica_set, hosts) = match host.split_once('/') {
        Some((set, hosts)) if !set.is_empty() => (Some(set.to_owned()), hosts),
        Some(_) => return Err(format!("shard {id}: no replica set name in {host:?}")),
        None => (None, host),
    };
    let seeds: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|seed| !seed.is_empty())
        .map(str::to_owned)
        .collect();
    if seeds.is_empty() {
        return Err(format!("shard {id}: no hosts in {host:?}"));
    }
    Ok(Shard {
        id: id.to_owned(),
        replica_set,
        seeds,
        // Absent on shards that are not draining.
        draining: entry.get_bool("draining").unwrap_or(false),
    })
}

impl Shard {
    /// Options for a client of this shard's primary, built from the router's `router` options.
    ///
    /// Kept from the router: credentials, TLS, app name, API version and timeouts. Not kept:
    /// its hosts, an SRV record (which would be polled and turn the client back to the
    /// routers), load balancing, and its read preference: `serverStatus` must run on the
    /// primary, where the writes land, and the default selection is the primary.
    /// The credentials must be valid on the shard itself (a shard-local user with
    /// `clusterMonitor`): users created through a router live on the config servers.
    pub fn client_options(&self, router: &ClientOptions) -> Result<ClientOptions, String> {
        let hosts = self
            .seeds
            .iter()
            .map(|seed| {
                ServerAddress::parse(seed).map_err(|e| format!("shard {}: {seed}: {e}", self.id))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut options = ClientOptions::builder()
            .hosts(hosts)
            .repl_set_name(self.replica_set.clone())
            // A standalone has no set to discover; a replica set's primary is found from any
            // seed.
            .direct_connection(self.replica_set.is_none().then_some(true))
            .build();
        options.credential = router.credential.clone();
        options.tls = router.tls.clone();
        options.app_name = router.app_name.clone();
        options.server_api = router.server_api.clone();
        options.connect_timeout = router.connect_timeout;
        options.server_selection_timeout = router.server_selection_timeout;
        Ok(options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::{Timestamp, doc};
    use mongodb::options::{ReadPreference, SelectionCriteria, Tls};

    /// A 8.0 cluster with two shard replica sets (one draining) and the config shard, as
    /// `db.adminCommand({ listShards: 1 })` returns it through a router. Written for this
    /// test from the command's documented fields; host names are invented.
    fn list_shards() -> Document {
        let topology_time = Timestamp {
            time: 1_736_950_000,
            increment: 3,
        };
        doc! {
            "shards": [
                {
                    "_id": "shard01",
                    "host": "shard01/s1-a.db.internal:27018,s1-b.db.internal:27018,s1-c.db.internal:27018",
                    "state": 1,
                    "topologyTime": topology_time,
                    "replSetConfigVersion": -1_i64,
                },
                {
                    "_id": "shard02",
                    "host": "shard02/s2-a.db.internal:27018,s2-b.db.internal:27018",
                    "state": 1,
                    "draining": true,
                    "tags": ["eu"],
                    "topologyTime": topology_time,
                    "replSetConfigVersion": -1_i64,
                },
                {
                    "_id": "config",
                    "host": "configRepl/cfg-a.db.internal:27019,cfg-b.db.internal:27019,cfg-c.db.internal:27019",
                    "state": 1,
                    "topologyTime": topology_time,
                    "replSetConfigVersion": -1_i64,
                },
            ],
            "ok": 1.0,
            "$clusterTime": {
                "clusterTime": topology_time,
                "signature": { "hash": Bson::Binary(mongodb::bson::Binary {
                    subtype: mongodb::bson::spec::BinarySubtype::Generic,
                    bytes: vec![0; 20],
                }), "keyId": 0_i64 },
            },
            "operationTime": topology_time,
        }
    }

    #[test]
    fn each_shard_gives_its_replica_set_and_seeds() {
        let shards = shards(&list_shards()).expect("a well-formed reply");
        assert_eq!(
            shards,
            vec![
                Shard {
                    id: "shard01".into(),
                    replica_set: Some("shard01".into()),
                    seeds: vec![
                        "s1-a.db.internal:27018".into(),
                        "s1-b.db.internal:27018".into(),
                        "s1-c.db.internal:27018".into(),
                    ],
                    draining: false,
                },
                Shard {
                    id: "shard02".into(),
                    replica_set: Some("shard02".into()),
                    seeds: vec![
                        "s2-a.db.internal:27018".into(),
                        "s2-b.db.internal:27018".into(),
                    ],
                    draining: true,
                },
                Shard {
                    id: "config".into(),
                    replica_set: Some("configRepl".into()),
                    seeds: vec![
                        "cfg-a.db.internal:27019".into(),
                        "cfg-b.db.internal:27019".into(),
                        "cfg-c.db.internal:27019".into(),
                    ],
                    draining: false,
                },
            ]
        );
    }

    #[test]
    fn a_standalone_shard_has_no_replica_set() {
        let reply =
            doc! { "shards": [{ "_id": "old", "host": "legacy.db.internal:27018" }], "ok": 1 };
        let shards = shards(&reply).expect("a standalone is listed as host:port");
        assert_eq!(shards[0].replica_set, None);
        assert_eq!(shards[0].seeds, vec!["legacy.db.internal:27018".to_owned()]);
    }

    #[test]
    fn a_reply_it_cannot_read_is_an_error_naming_why() {
        let cases = [
            (doc! { "ok": 1 }, "`shards`"),
            (doc! { "shards": [1] }, "not a document"),
            (doc! { "shards": [{ "host": "a/h:1" }] }, "`_id`"),
            (doc! { "shards": [{ "_id": "s", "host": 7 }] }, "shard s"),
            (
                doc! { "shards": [{ "_id": "s", "host": "/h:1" }] },
                "replica set",
            ),
            (
                doc! { "shards": [{ "_id": "s", "host": "rs/" }] },
                "no hosts",
            ),
            (
                doc! { "shards": [{ "_id": "s", "host": "rs/ , " }] },
                "no hosts",
            ),
        ];
        for (reply, why) in cases {
            let error = shards(&reply).expect_err("not a readable listShards reply");
            assert!(error.contains(why), "{reply}: {error}");
        }
        assert_eq!(shards(&doc! { "shards": [] }), Ok(vec![]));
    }

    #[tokio::test]
    async fn a_shard_client_keeps_the_routers_credentials_and_tls_but_not_its_hosts() {
        let router = ClientOptions::parse(
            "mongodb://monitor:secret@router-a:27017,router-b:27017/?authSource=admin&tls=true\
             &appName=tidegate&readPreference=secondaryPreferred&connectTimeoutMS=1500",
        )
        .await
        .expect("router options");
        let shard = &shards(&list_shards()).expect("shards")[0];
        let options = shard.client_options(&router).expect("options");
        assert_eq!(
            options.hosts,
            vec![
                ServerAddress::parse("s1-a.db.internal:27018").expect("address"),
                ServerAddress::parse("s1-b.db.internal:27018").expect("address"),
                ServerAddress::parse("s1-c.db.internal:27018").expect("address"),
            ]
        );
        assert_eq!(options.repl_set_name.as_deref(), Some("shard01"));
        assert_eq!(options.direct_connection, None);
        assert_eq!(options.credential, router.credential);
        assert_eq!(
            options
                .credential
                .as_ref()
                .and_then(|c| c.username.as_deref()),
            Some("monitor")
        );
        assert!(matches!(options.tls, Some(Tls::Enabled(_))));
        assert_eq!(options.app_name.as_deref(), Some("tidegate"));
        assert_eq!(
            options.connect_timeout,
            Some(std::time::Duration::from_millis(1500))
        );
        // The router's secondaryPreferred would send serverStatus away from the writes.
        assert!(matches!(
            router.selection_criteria,
            Some(SelectionCriteria::ReadPreference(
                ReadPreference::SecondaryPreferred { .. }
            ))
        ));
        assert_eq!(options.selection_criteria, None);
    }

    #[tokio::test]
    async fn a_standalone_shard_is_reached_directly_and_a_bad_seed_is_an_error() {
        let router = ClientOptions::parse("mongodb://router:27017")
            .await
            .expect("router options");
        let standalone = Shard {
            id: "old".into(),
            replica_set: None,
            seeds: vec!["legacy:27018".into()],
            draining: false,
        };
        let options = standalone.client_options(&router).expect("options");
        assert_eq!(options.direct_connection, Some(true));
        let bad = Shard {
            seeds: vec!["legacy:notaport".into()],
            ..standalone
        };
        let error = bad.client_options(&router).expect_err("a bad port");
        assert!(error.contains("shard old"), "{error}");
    }
}
