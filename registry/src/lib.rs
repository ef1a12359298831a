//! The schema registry as AeroGrid uses it: writer schemas by id (`GET /schemas/ids/{id}`, the
//! REST API as Confluent documents it, which Karapace and Apicurio speak too), each looked up once
//! and kept (a bounded cache: ids are immutable in a registry), and schemas registered under a
//! subject for `aerogrid produce` (`POST /subjects/{subject}/versions`).
//!
//! What goes wrong is told apart: an id the registry does not have, credentials it refuses, and a
//! registry that cannot be reached. None of them is the app's records' fault, so an app waits on
//! each and tries again; nothing is skipped.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

/// Most schemas kept per process, and their most bytes (a schema is a few KiB; ids are
/// immutable, so a kept one is never stale).
const MAX_CACHED: usize = 10_000;
const MAX_CACHED_BYTES: usize = 64 << 20;
/// Longest a registry request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest schema taken from a registry.
const MAX_SCHEMA_BYTES: usize = 1 << 20;

/// Flags of the registry (`server`, `runtime` and `dev` share them).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct RegistryArgs {
    /// A Confluent-compatible schema registry (Confluent, Karapace, Apicurio), for topics in
    /// Avro, Protobuf or JSON Schema.
    #[arg(long, env = "AEROGRID_SCHEMA_REGISTRY_URL")]
    pub schema_registry_url: Option<url::Url>,
    /// Basic-auth user of the registry (with --schema-registry-password).
    #[arg(long, env = "AEROGRID_SCHEMA_REGISTRY_USER", requires = "schema_registry_password")]
    pub schema_registry_user: Option<String>,
    #[arg(long, env = "AEROGRID_SCHEMA_REGISTRY_PASSWORD", hide_env_values = true)]
    pub schema_registry_password: Option<String>,
    /// A bearer token for the registry, instead of a user and password.
    #[arg(
        long,
        env = "AEROGRID_SCHEMA_REGISTRY_TOKEN",
        hide_env_values = true,
        conflicts_with = "schema_registry_user"
    )]
    pub schema_registry_token: Option<String>,
    /// A PEM file of the CA that signs the registry's certificate (beside the public roots).
    #[arg(long, env = "AEROGRID_SCHEMA_REGISTRY_CA")]
    pub schema_registry_ca: Option<std::path::PathBuf>,
}

/// A schema as the registry holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisteredSchema {
    /// `AVRO` (the registry's default), `JSON` or `PROTOBUF`.
    pub schema_type: String,
    pub schema: String,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("no schema registry is set (--schema-registry-url)")]
    NotConfigured,
    #[error("the schema registry has no schema {0}")]
    UnknownSchema(u32),
    #[error("the schema registry refuses the platform's credentials ({0})")]
    Refused(u16),
    #[error("the schema registry cannot be reached: {0}")]
    Unavailable(String),
    #[error("the schema registry answered what is not a schema: {0}")]
    Malformed(String),
    #[error("{0}")]
    Config(String),
}

/// A registry client with its cache; cheap to clone (one cache).
#[derive(Clone)]
pub struct Registry {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    base: url::Url,
    client: reqwest::Client,
    credentials: Credentials,
    cache: Mutex<HashMap<u32, Arc<RegisteredSchema>>>,
    /// One lookup per id at a time: others wait for its answer.
    lookups: Mutex<HashMap<u32, Arc<tokio::sync::Mutex<()>>>>,
}

#[derive(Clone)]
enum Credentials {
    None,
    Basic(String, String),
    Bearer(String),
}

impl RegistryArgs {
    /// The client; without a URL, one that says so when asked.
    pub fn registry(&self) -> Result<Registry, RegistryError> {
        let Some(base) = self.schema_registry_url.clone() else {
            return Ok(Registry { inner: None });
        };
        let mut builder = reqwest::Client::builder().timeout(REQUEST_TIMEOUT);
        if let Some(ca) = &self.schema_registry_ca {
            let pem = std::fs::read(ca).map_err(|error| {
                RegistryError::Config(format!("--schema-registry-ca {}: {error}", ca.display()))
            })?;
            let certificate = reqwest::Certificate::from_pem(&pem).map_err(|error| {
                RegistryError::Config(format!("--schema-registry-ca {}: {error}", ca.display()))
            })?;
            builder = builder.add_root_certificate(certificate);
        }
        let client = builder
            .build()
            .map_err(|error| RegistryError::Config(format!("the registry client: {error}")))?;
        let credentials = match (
            &self.schema_registry_user,
            &self.schema_registry_password,
            &self.schema_registry_token,
        ) {
            (Some(user), Some(password), _) => Credentials::Basic(user.clone(), password.clone()),
            (_, _, Some(token)) => Credentials::Bearer(token.clone()),
            _ => Credentials::None,
        };
        Ok(Registry {
            inner: Some(Arc::new(Inner {
                base,
                client,
                credentials,
                cache: Mutex::default(),
                lookups: Mutex::default(),
            })),
        })
    }
}

impl Registry {
    /// A client of no registry (every lookup says none is set).
    pub fn none() -> Self {
        Self { inner: None }
    }

    pub fn is_configured(&self) -> bool {
        self.inner.is_some()
    }

    /// The schema with registry id `id`: from the cache, or asked once.
    pub async fn schema(&self, id: u32) -> Result<Arc<RegisteredSchema>, RegistryError> {
        let inner = self.inner.as_ref().ok_or(RegistryError::NotConfigured)?;
        if let Some(found) = inner.cached(id) {
            return Ok(found);
        }
        let gate = inner
            .lookups
            .lock()
            .expect("no panic holds the lookups")
            .entry(id)
            .or_default()
            .clone();
        let _asking = gate.lock().await;
        if let Some(found) = inner.cached(id) {
            return Ok(found);
        }
        let result = inner.fetch(id).await;
        inner.lookups.lock().expect("no panic holds the lookups").remove(&id);
        let schema = Arc::new(result?);
        let mut cache = inner.cache.lock().expect("no panic holds the cache");
        let bytes = |cache: &HashMap<u32, Arc<RegisteredSchema>>| -> usize {
            cache.values().map(|schema| schema.schema.len()).sum()
        };
        // Ids are immutable: any may go; it is asked again if needed.
        while !cache.is_empty()
            && (cache.len() >= MAX_CACHED || bytes(&cache) + schema.schema.len() > MAX_CACHED_BYTES)
        {
            let any = *cache.keys().next().expect("not empty");
            cache.remove(&any);
        }
        cache.insert(id, schema.clone());
        Ok(schema)
    }

    /// Registers `schema` under `subject` (or finds it there) and returns its id.
    pub async fn register(
        &self,
        subject: &str,
        schema: &RegisteredSchema,
    ) -> Result<u32, RegistryError> {
        let inner = self.inner.as_ref().ok_or(RegistryError::NotConfigured)?;
        let url = inner.url(&["subjects", subject, "versions"])?;
        let mut body = serde_json::json!({ "schema": schema.schema });
        if schema.schema_type != "AVRO" {
            body["schemaType"] = serde_json::Value::String(schema.schema_type.clone());
        }
        let response = inner
            .authorised(inner.client.post(url))
            .header("content-type", "application/vnd.schemaregistry.v1+json")
            .json(&body)
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(RegistryError::Refused(status.as_u16()));
        }
        let text = response.text().await.map_err(unreachable)?;
        if !status.is_success() {
            return Err(RegistryError::Malformed(format!("{status}: {}", cut(&text))));
        }
        #[derive(serde::Deserialize)]
        struct Registered {
            id: u32,
        }
        serde_json::from_str::<Registered>(&text)
            .map(|registered| registered.id)
            .map_err(|error| RegistryError::Malformed(error.to_string()))
    }
}

impl Inner {
    fn cached(&self, id: u32) -> Option<Arc<RegisteredSchema>> {
        self.cache.lock().expect("no panic holds the cache").get(&id).cloned()
    }

    fn url(&self, segments: &[&str]) -> Result<url::Url, RegistryError> {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .map_err(|()| RegistryError::Config(format!("{} cannot be a base URL", self.base)))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }

    fn authorised(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.credentials {
            Credentials::None => request,
            Credentials::Basic(user, password) => request.basic_auth(user, Some(password)),
            Credentials::Bearer(token) => request.bearer_auth(token),
        }
    }

    async fn fetch(&self, id: u32) -> Result<RegisteredSchema, RegistryError> {
        let url = self.url(&["schemas", "ids", &id.to_string()])?;
        let response = self
            .authorised(self.client.get(url))
            .header("accept", "application/vnd.schemaregistry.v1+json")
            .send()
            .await
            .map_err(unreachable)?;
        let status = response.status();
        match status {
            reqwest::StatusCode::NOT_FOUND => return Err(RegistryError::UnknownSchema(id)),
            reqwest::StatusCode::UNAUTHORIZED | reqwest::StatusCode::FORBIDDEN => {
                return Err(RegistryError::Refused(status.as_u16()));
            }
            status if !status.is_success() => {
                return Err(RegistryError::Unavailable(format!("it answered {status}")));
            }
            _ => {}
        }
        // Read up to the bound, not the whole answer first.
        let mut response = response;
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            if bytes.len() + chunk.len() > MAX_SCHEMA_BYTES {
                return Err(RegistryError::Malformed(format!(
                    "schema {id} is larger than {MAX_SCHEMA_BYTES} bytes"
                )));
            }
            bytes.extend_from_slice(&chunk);
        }
        #[derive(serde::Deserialize)]
        struct Answer {
            schema: String,
            #[serde(rename = "schemaType", default)]
            schema_type: Option<String>,
        }
        let answer: Answer = serde_json::from_slice(&bytes)
            .map_err(|error| RegistryError::Malformed(error.to_string()))?;
        Ok(RegisteredSchema {
            schema_type: answer.schema_type.unwrap_or_else(|| "AVRO".into()),
            schema: answer.schema,
        })
    }
}

fn unreachable(error: reqwest::Error) -> RegistryError {
    // Without the URL: it may carry credentials.
    RegistryError::Unavailable(error.without_url().to_string())
}

fn cut(text: &str) -> String {
    text.chars().take(300).collect()
}
