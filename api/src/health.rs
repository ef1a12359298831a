//! `GET /healthz`: whether the server's dependencies answer.

use serde::{Deserialize, Serialize};

crate::words! {
    /// The server as a whole.
    pub enum HealthStatus ("health status") {
        /// Every dependency answers.
        Ok = "ok",
        /// One does not (the answer is then 503, with this same body).
        Degraded = "degraded",
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Health {
    pub status: HealthStatus,
    pub database: Probe,
    pub broker: Probe,
}

/// One dependency's check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Probe {
    pub ok: bool,
    pub latency_ms: f64,
    /// Why it is not ok.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
