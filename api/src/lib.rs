//! The REST API's contract: every request body, query and answer of `/api/v1` (and
//! `/healthz`), as serde types that the server's handlers and every Rust client share.
//!
//! - Compiles for native and `wasm32-unknown-unknown` (the frontend); `openapi` adds the
//!   OpenAPI schemas the server documents its routes with.
//! - Request bodies refuse unknown fields: a misspelled `base_version` is a 400, not a save
//!   that silently skips its conflict check. Answers may grow fields: clients ignore those.
//! - Closed sets of words (an app's state, a role, a token's scope) are enums; their text is
//!   the JSON and the database's (`as_str`, `FromStr`).
//! - Timestamps are `DateTime<Utc>` (RFC 3339 on the wire).
//! - No database row type is one of these: the server maps rows into them.

mod account;
mod app;
mod diagnostic;
mod health;
mod problem;
mod team;
mod version;

pub use account::{Me, NewPassword, NewUser, PersonalToken, SignIn, UserCreated};
pub use app::{
    AppDetail, AppState, AppSummary, BadRecord, ChangeApp, DesiredState, Lifecycle, LimitQuery,
    LogLine, LogQuery, NewApp, SaveApp, Saved, StartQuery, Status, ValidateRequest, Validation,
};
pub use diagnostic::{Diagnostic, Severity, SourceFile};
pub use health::{Health, HealthStatus, Probe};
pub use problem::Problem;
pub use team::{
    AuditEvent, AuditQuery, ChangeTeam, Member, MemberRole, NewTeam, NewToken, QuotaSettings,
    Quotas, Role, Scope, Share, SharedGrid, Team, TeamDetail, Token, TokenCreated, TopicGrant,
    Usage,
};
pub use version::{DiffQuery, RolledBack, VersionCode, VersionDiff, VersionInfo};

/// A word that is not one of an enum's values (from the database or a client).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownValue {
    pub kind: &'static str,
    pub value: String,
}

impl std::fmt::Display for UnknownValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}` is not a known {}", self.value, self.kind)
    }
}

impl std::error::Error for UnknownValue {}

/// An enum whose values are words: serde, `as_str`, `FromStr`, `Display` and `ALL`, all from
/// one list of variants and their text.
macro_rules! words {
    (
        $(#[$meta:meta])*
        pub enum $name:ident ($kind:literal) {
            $( $(#[$variant_meta:meta])* $variant:ident = $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        pub enum $name {
            $( $(#[$variant_meta])* #[serde(rename = $text)] $variant, )+
        }

        impl $name {
            /// Every value, in the order declared.
            pub const ALL: &[Self] = &[$(Self::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }
        }

        impl std::str::FromStr for $name {
            type Err = $crate::UnknownValue;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                match text {
                    $($text => Ok(Self::$variant),)+
                    _ => Err($crate::UnknownValue { kind: $kind, value: text.to_owned() }),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use words;

#[cfg(test)]
mod tests;
