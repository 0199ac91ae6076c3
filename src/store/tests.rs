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
