//! Indexes an application reads and writes by: described as data, looked up, and created only
//! when asked (`tidegate setup`). An index build scans its whole collection at a pace nothing
//! controls, so it never happens as a side effect of starting a process.

use futures::TryStreamExt;
use mongodb::IndexModel;
use mongodb::bson::Document;

use super::Store;

/// How long `tidegate setup` waits for one index build.
const INDEX_BUILD_LIMIT: std::time::Duration = std::time::Duration::from_secs(3600);

/// One index on one collection: its keys in order, as `createIndexes` takes them.
#[derive(Debug, Clone, PartialEq)]
pub struct Index {
    pub collection: &'static str,
    pub keys: Document,
}

impl std::fmt::Display for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.collection, self.keys)
    }
}

impl Store {
    /// Whether the database has an index with exactly `index`'s keys, in order (a missing
    /// collection has none).
    pub async fn has_index(&self, index: &Index) -> mongodb::error::Result<bool> {
        let collection = self.database().collection::<Document>(index.collection);
        let listed: mongodb::error::Result<Vec<IndexModel>> = self
            .bounded(async { collection.list_indexes().await?.try_collect().await })
            .await;
        match listed {
            Ok(models) => Ok(models.iter().any(|m| m.keys == index.keys)),
            // NamespaceNotFound: no collection yet, so no index.
            Err(e) if matches!(e.kind.as_ref(), mongodb::error::ErrorKind::Command(c) if c.code == 26) => {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Creates `index` (a no-op where it exists), waiting up to an hour for the build: on a
    /// large collection it takes far longer than one operation's limit. One index per command:
    /// FerretDB 1.24 drops the connection on a `createIndexes` that names several.
    pub async fn create_index(&self, index: &Index) -> mongodb::error::Result<()> {
        let collection = self.database().collection::<Document>(index.collection);
        let build = collection
            .create_index(IndexModel::builder().keys(index.keys.clone()).build())
            .max_time(INDEX_BUILD_LIMIT);
        self.bounded_for(INDEX_BUILD_LIMIT, build).await.map(drop)
    }
}
