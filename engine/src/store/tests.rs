use super::*;
use proptest::prelude::*;

#[test]
fn reply_maps_write_errors_to_their_statements() {
    let reply = doc! {
        "n": 3, "nModified": 1,
        "upserted": [ { "index": 2, "_id": 1 } ],
        "writeErrors": [ { "index": 1, "code": 66, "errmsg": "Performing an update on the path '_id' would modify the immutable field '_id'" } ],
        "ok": 1.0,
    };
    let (results, summary) = parse_update_reply(&reply, 4);
    assert!(results[0].is_ok() && results[2].is_ok() && results[3].is_ok());
    let failure = results[1].clone().expect_err("statement 1 failed");
    assert!(!failure.transient);
    assert!(failure.message.contains("immutable field '_id' (code 66)"));
    assert_eq!(
        summary,
        BulkSummary {
            matched: 3,
            modified: 1,
            upserted: 1,
            failed: 1,
            round_trips: 1
        }
    );
}

#[test]
fn write_concern_errors_make_the_rest_transient() {
    let reply = doc! {
        "n": 2, "nModified": 0,
        "writeErrors": [ { "index": 0, "code": 11000, "errmsg": "E11000 duplicate key" } ],
        "writeConcernError": { "code": 64, "errmsg": "waiting for replication timed out" },
        "ok": 1,
    };
    let (results, _) = parse_update_reply(&reply, 2);
    assert!(!results[0].clone().expect_err("dup").transient);
    assert!(results[1].clone().expect_err("wce").transient);
}

#[test]
fn write_conflicts_are_transient() {
    let reply = doc! { "n": 0, "writeErrors": [ { "index": 0i64, "code": 112, "errmsg": "WriteConflict" } ], "ok": 1 };
    let (results, _) = parse_update_reply(&reply, 1);
    assert!(results[0].clone().expect_err("conflict").transient);
}

#[test]
fn oversized_items_travel_alone() {
    assert_eq!(split(&[5, 100, 5, 5], 10, 50), vec![0..1, 1..2, 2..4]);
    assert_eq!(split(&[1, 1, 1], 2, 50), vec![0..2, 2..3]);
    assert!(split(&[], 2, 50).is_empty());
}

proptest! {
    #[test]
    fn split_covers_every_item_in_order_within_bounds(
        sizes in proptest::collection::vec(0usize..200, 0..300),
        max_docs in 1usize..50,
        max_bytes in 1usize..1000,
    ) {
        let ranges = split(&sizes, max_docs, max_bytes);
        let mut next = 0;
        for r in &ranges {
            prop_assert_eq!(r.start, next);
            prop_assert!(!r.is_empty() && r.len() <= max_docs);
            let bytes: usize = sizes[r.clone()].iter().sum();
            prop_assert!(bytes <= max_bytes || r.len() == 1);
            next = r.end;
        }
        prop_assert_eq!(next, sizes.len());
    }
}

/// A replica set's primary changing, as the server answers a write meanwhile: the replies (code,
/// name) that MongoDB's retryable-writes specification has drivers retry on, which a stepdown,
/// an election or a shutdown produce. Each is transient, so the jobs of a failed batch retry
/// through the change rather than fail; a duplicate key, for contrast, is not.
#[test]
fn a_primary_change_is_a_transient_error() {
    let command_error = |code: i32, name: &str| {
        let reply = doc! { "ok": 0.0, "errmsg": format!("{name} (a primary change)"), "code": code, "codeName": name };
        let error: mongodb::error::CommandError =
            mongodb::bson::from_document(reply).expect("a command error reply");
        mongodb::error::Error::from(mongodb::error::ErrorKind::Command(error))
    };
    for (code, name) in [
        (10107, "NotWritablePrimary"),
        (13435, "NotPrimaryNoSecondaryOk"),
        (13436, "NotPrimaryOrSecondary"),
        (189, "PrimarySteppedDown"),
        (91, "ShutdownInProgress"),
        (11600, "InterruptedAtShutdown"),
        (11602, "InterruptedDueToReplStateChange"),
        (7, "HostNotFound"),
        (6, "HostUnreachable"),
        (89, "NetworkTimeout"),
        (9001, "SocketException"),
        (262, "ExceededTimeLimit"),
    ] {
        assert!(
            classify(&command_error(code, name)).transient,
            "{name} ({code})"
        );
    }
    assert!(!classify(&command_error(11000, "DuplicateKey")).transient);

    // The writes applied, then the primary stepped down before the majority confirmed them.
    let reply = doc! {
        "n": 2, "nModified": 2,
        "writeConcernError": { "code": 189, "codeName": "PrimarySteppedDown", "errmsg": "primary stepped down" },
        "ok": 1.0,
    };
    let (results, _) = parse_update_reply(&reply, 2);
    assert!(
        results
            .iter()
            .all(|r| r.as_ref().is_err_and(|f| f.transient))
    );
}
