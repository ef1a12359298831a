//! Which Kafka topics a team's connectors may read: its own namespace `<team>.*`, and the names
//! and `prefix*` patterns an administrator granted it. Platform topics (`aerogrid.*`, the
//! changelogs among them) and the broker's internal ones (`__consumer_offsets`) are never
//! readable, whatever was granted.
//!
//! The backend checks this when it validates and starts an app; the runtime node checks it
//! again before it consumes, and stops an app whose grant was revoked.

/// Topics of the platform: changelogs and anything else it keeps for itself.
pub const PLATFORM_PREFIX: &str = "aerogrid.";
/// Topics the broker keeps for itself (consumer offsets, transaction state).
const BROKER_PREFIX: &str = "__";
/// Kafka's limit on a topic name.
pub const MAX_TOPIC_NAME: usize = 249;

/// Why a team may not read a topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TopicRefusal {
    /// A topic of the platform or of the broker itself.
    Platform { topic: String },
    /// Not in the team's namespace and not granted (whether or not it exists: no oracle).
    NotGranted { team: String, topic: String },
}

impl std::fmt::Display for TopicRefusal {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Platform { topic } => write!(
                formatter,
                "topic `{topic}` belongs to the platform: connectors can never read it"
            ),
            Self::NotGranted { team, topic } => write!(
                formatter,
                "team `{team}` may not read topic `{topic}`; an administrator can grant it"
            ),
        }
    }
}

impl std::error::Error for TopicRefusal {}

/// Whether `topic` is the platform's or the broker's own.
pub fn is_platform_topic(topic: &str) -> bool {
    topic.starts_with(PLATFORM_PREFIX) || topic.starts_with(BROKER_PREFIX)
}

/// Whether `pattern` (a topic name, or a prefix ending in `*`) covers `topic`.
pub fn pattern_matches(pattern: &str, topic: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => topic.starts_with(prefix),
        None => pattern == topic,
    }
}

/// Whether team `team`, with `grants`, may read `topic`.
pub fn check_topic<S: AsRef<str>>(
    team: &str,
    grants: &[S],
    topic: &str,
) -> Result<(), TopicRefusal> {
    if is_platform_topic(topic) {
        return Err(TopicRefusal::Platform { topic: topic.to_owned() });
    }
    let own_namespace = topic.strip_prefix(team).is_some_and(|rest| rest.starts_with('.'));
    if own_namespace || grants.iter().any(|grant| pattern_matches(grant.as_ref(), topic)) {
        Ok(())
    } else {
        Err(TopicRefusal::NotGranted { team: team.to_owned(), topic: topic.to_owned() })
    }
}

/// Whether a grant `pattern` covers any topic of the namespace `<team>.*`.
pub fn pattern_overlaps_namespace(pattern: &str, team: &str) -> bool {
    let namespace = format!("{team}.");
    match pattern.strip_suffix('*') {
        Some(prefix) => prefix.starts_with(&namespace) || namespace.starts_with(prefix),
        None => pattern.starts_with(&namespace),
    }
}

/// Checks a grant an administrator asks for: a topic name or a prefix ending in `*`, in
/// Kafka's topic alphabet, that can match some topic a connector may read.
pub fn check_grant_pattern(pattern: &str) -> Result<(), String> {
    let name = pattern.strip_suffix('*').unwrap_or(pattern);
    if name.is_empty() {
        return Err(
            "a grant names a topic or a prefix ending in `*` (`sales.*`): `*` alone would grant every topic"
                .to_owned(),
        );
    }
    if pattern.len() > MAX_TOPIC_NAME {
        return Err(format!("a topic name has at most {MAX_TOPIC_NAME} characters"));
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        return Err(format!(
            "`{pattern}` is not a topic name or prefix: letters, digits, `.`, `_` and `-`, with `*` only at the end"
        ));
    }
    if is_platform_topic(name) {
        return Err(format!(
            "`{pattern}` names the platform's own topics, which can never be granted"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_team_reads_its_namespace_and_its_grants_only() {
        let grants = ["orders", "sales.*"];
        assert_eq!(check_topic("demo", &grants, "demo.orders"), Ok(()));
        assert_eq!(check_topic("demo", &grants, "orders"), Ok(()));
        assert_eq!(check_topic("demo", &grants, "sales.eu"), Ok(()));
        let refused = check_topic("demo", &grants, "orders2").unwrap_err();
        assert_eq!(
            refused.to_string(),
            "team `demo` may not read topic `orders2`; an administrator can grant it"
        );
        // Another team whose name starts with this one's is not its namespace.
        assert!(check_topic("demo", &grants, "demolition.orders").is_err());
        assert!(check_topic("demo", &grants, "demo").is_err());
    }

    #[test]
    fn platform_topics_are_never_readable() {
        let everything = ["a*", "aero*", "aerogrid.changelog.x", "_*"];
        for topic in ["aerogrid.changelog.0b0f", "__consumer_offsets", "aerogrid.x"] {
            assert!(
                matches!(
                    check_topic("aerogrid", &everything, topic),
                    Err(TopicRefusal::Platform { .. })
                ),
                "{topic}"
            );
        }
    }

    #[test]
    fn a_namespace_overlaps_the_grants_that_cover_some_of_it() {
        for overlapping in ["payments.*", "payments.cards", "pay*", "payments.eu.*"] {
            assert!(pattern_overlaps_namespace(overlapping, "payments"), "{overlapping}");
        }
        for apart in ["payments", "paymentsx.*", "orders", "paymentsy*"] {
            assert!(!pattern_overlaps_namespace(apart, "payments"), "{apart}");
        }
    }

    #[test]
    fn grants_are_names_or_prefixes_of_user_topics() {
        // `aero*` matches `aerospace`; platform topics stay unreadable through it.
        for good in ["orders", "sales.*", "sales*", "a-b_c.d", "aero*"] {
            assert_eq!(check_grant_pattern(good), Ok(()), "{good}");
        }
        for bad in ["*", "", "aerogrid.*", "aerogrid.changelog.x", "__x", "a*b", "a b"] {
            assert!(check_grant_pattern(bad).is_err(), "{bad}");
        }
        assert!(check_grant_pattern(&"a".repeat(250)).is_err());
    }
}
