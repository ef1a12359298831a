//! Topic grants: the Kafka topics a team may read beyond its own namespace.

use aerogrid_api::TopicGrant;
use uuid::Uuid;

use crate::{Result, db::teams};

/// The team's grants, by pattern.
pub async fn grants(db: impl sqlx::PgExecutor<'_>, team: Uuid) -> Result<Vec<TopicGrant>> {
    let grants = sqlx::query_as!(
        TopicGrant,
        "SELECT pattern, granted_by, created_at FROM topic_grants
         WHERE team_id = $1 ORDER BY pattern",
        team
    )
    .fetch_all(db)
    .await?;
    Ok(grants)
}

/// The team's grant patterns alone (what validation checks topics against).
pub async fn patterns(db: &sqlx::PgPool, team: Uuid) -> Result<Vec<String>> {
    Ok(grants(db, team).await?.into_iter().map(|grant| grant.pattern).collect())
}

/// Grants `pattern` to the team (again: keeps the first grant), with its audit event.
pub async fn grant(
    db: &sqlx::PgPool,
    team: Uuid,
    pattern: &str,
    actor: (Uuid, &str),
) -> Result<TopicGrant> {
    let mut tx = db.begin().await?;
    let grant = sqlx::query_as!(
        TopicGrant,
        "INSERT INTO topic_grants (team_id, pattern, granted_by) VALUES ($1, $2, $3)
         ON CONFLICT (team_id, pattern) DO UPDATE SET pattern = EXCLUDED.pattern
         RETURNING pattern, granted_by, created_at",
        team,
        pattern,
        actor.1
    )
    .fetch_one(&mut *tx)
    .await?;
    teams::audit(&mut *tx, team, actor, "topic.grant", pattern, serde_json::json!({})).await?;
    tx.commit().await?;
    Ok(grant)
}

/// Revokes a grant; false when the team had no such grant. Runtime nodes stop the team's apps
/// that read a topic it no longer covers, and servers end their streams (a trigger notifies).
pub async fn revoke(
    db: &sqlx::PgPool,
    team: Uuid,
    pattern: &str,
    actor: (Uuid, &str),
) -> Result<bool> {
    let mut tx = db.begin().await?;
    let removed =
        sqlx::query!("DELETE FROM topic_grants WHERE team_id = $1 AND pattern = $2", team, pattern)
            .execute(&mut *tx)
            .await?
            .rows_affected();
    if removed > 0 {
        teams::audit(&mut *tx, team, actor, "topic.revoke", pattern, serde_json::json!({})).await?;
    }
    tx.commit().await?;
    Ok(removed > 0)
}

/// Whether any team's grant covers topics of the namespace `<team>.*` (a new team of that name
/// would read them too).
pub async fn namespace_is_granted(db: &sqlx::PgPool, team: &str) -> Result<bool> {
    let patterns =
        sqlx::query_scalar!("SELECT DISTINCT pattern FROM topic_grants").fetch_all(db).await?;
    Ok(patterns
        .iter()
        .any(|pattern| aerogrid_policy::topics::pattern_overlaps_namespace(pattern, team)))
}
