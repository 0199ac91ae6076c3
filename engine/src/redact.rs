//! What of a secret may be printed: URLs with their passwords or keys masked, for logs, `tidegate
//! config` and error messages. Written by hand because a MongoDB seed list (`h1:1,h2:2`) is not
//! a URL the `url` crate parses.

/// Only the scheme and host: `https://hooks.example.com/****`, since a webhook's path is its key.
pub(crate) fn redact_path(value: &str) -> String {
    let Some((scheme, rest)) = value.split_once("://") else {
        return if value.is_empty() {
            String::new()
        } else {
            "****".to_owned()
        };
    };
    let host_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let host = rest[..host_end].rsplit('@').next().unwrap_or_default();
    format!("{scheme}://{host}/****")
}

/// Hides the password in a URL's user info (`scheme://user:pass@host` → `scheme://user:****@host`),
/// in each URL of a comma-separated list (a Redis Cluster's seed nodes; a MongoDB seed list's
/// further hosts carry no user info).
pub(crate) fn redact_url(value: &str) -> String {
    value
        .split(',')
        .map(redact_one)
        .collect::<Vec<_>>()
        .join(",")
}

fn redact_one(value: &str) -> String {
    let Some((scheme, rest)) = value.split_once("://") else {
        return value.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return value.to_owned();
    };
    let userinfo = &rest[..at];
    let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
    let masked = if userinfo.contains(':') {
        format!("{user}:****")
    } else {
        "****".to_owned()
    };
    format!("{scheme}://{masked}{}", &rest[at..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_hides_only_the_password() {
        assert_eq!(
            redact_url("mongodb://app:s3cret@h1:27017,h2:27017/db?replicaSet=rs0"),
            "mongodb://app:****@h1:27017,h2:27017/db?replicaSet=rs0"
        );
        assert_eq!(
            redact_url("redis://:pw@localhost:6379/0"),
            "redis://:****@localhost:6379/0"
        );
        assert_eq!(
            redact_url("redis://127.0.0.1:6390"),
            "redis://127.0.0.1:6390"
        );
        assert_eq!(
            redact_url("redis://:a@n1:7000,redis://u:b@n2:7001"),
            "redis://:****@n1:7000,redis://u:****@n2:7001"
        );
        assert_eq!(
            redact_url("mongodb://h/?authSource=a@b"),
            "mongodb://h/?authSource=a@b"
        );
    }
}
