//! MongoDB access: the client, the database the pipelines use, and reachability checks.

use mongodb::bson::doc;
use mongodb::options::ClientOptions;
use mongodb::{Client, Database};

/// A connected MongoDB client and tidegate's database. Cheap to clone: the driver's client is a
/// handle to one shared connection pool.
#[derive(Clone, Debug)]
pub struct Store {
    client: Client,
    db: Database,
}

impl Store {
    /// Parses the connection string and builds the pool. No round trip happens here: the driver
    /// connects on first use, so a database that is down shows up in [`Store::ping`].
    pub async fn connect(uri: &str, database: &str) -> mongodb::error::Result<Self> {
        let mut options = ClientOptions::parse(uri).await?;
        options.app_name = Some("tidegate".to_owned());
        let client = Client::with_options(options)?;
        let db = client.database(database);
        Ok(Self { client, db })
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// One `ping` round trip to the server.
    pub async fn ping(&self) -> mongodb::error::Result<()> {
        self.client
            .database("admin")
            .run_command(doc! { "ping": 1 })
            .await
            .map(drop)
    }
}
