//! The AWS SDK configuration shared by every client: loaded once per cold
//! start, with explicit timeouts, a bounded standard retry policy and one
//! HTTPS client for every SDK client.
//!
//! `AWS_ENDPOINT_URL` (or `AWS_ENDPOINT_URL_<SERVICE>`) points every client
//! at LocalStack, moto or any other emulator without a code change. What the
//! process environment decides ([`SdkSetup`]):
//!
//! - **The trust store.** The five Amazon Trust Services roots compiled in
//!   (`aws-roots.pem`), which every AWS endpoint chains to: parsing the
//!   machine's whole CA bundle was three quarters of a function's cold start
//!   (docs/PERFORMANCE.md). The machine's roots instead when an endpoint is
//!   overridden (an emulator or proxy may present any certificate) or when
//!   `LAMBENT_AWS_NATIVE_ROOTS` says so (`1`; `0` keeps the AWS roots even
//!   with an endpoint override).
//! - **Credentials and region.** In Lambda, whose execution role's
//!   credentials are in the environment, the environment credentials and
//!   `AWS_REGION`, so no other provider (web identity and its STS client,
//!   profiles, IMDS) is built. Elsewhere, or in a Lambda whose credentials
//!   are not in the environment, the SDK's default chains.

use std::error::Error;
use std::time::Duration;

use aws_config::environment::credentials::EnvironmentVariableCredentialsProvider;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, ConfigLoader, Region, SdkConfig};
use aws_sdk_dynamodb::config::{ConfigBag, SharedHttpClient};
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_smithy_http_client::tls::rustls_provider::CryptoMode;
use aws_smithy_http_client::tls::{Provider, TlsContext, TrustStore};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata;
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;

/// Time allowed to open a TCP (and TLS) connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Time allowed for one attempt of an operation, response included.
pub const OPERATION_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time allowed for an operation, all retries included.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);
/// Attempts per operation (the first one included), with exponential backoff.
pub const MAX_ATTEMPTS: u32 = 3;

/// The roots every AWS service endpoint's certificate chains to: Amazon
/// Root CA 1 to 4 and Starfield Services Root CA G2 (Amazon Trust Services),
/// as PEM.
pub const AWS_ROOTS_PEM: &str = include_str!("aws-roots.pem");

/// `1` trusts the machine's CA bundle, `0` only [`AWS_ROOTS_PEM`]; unset,
/// the machine's bundle is trusted only when an endpoint is overridden.
pub const NATIVE_ROOTS_VARIABLE: &str = "LAMBENT_AWS_NATIVE_ROOTS";

/// The timeouts every client uses unless an operation overrides them (SQS
/// long polling does: its attempt lasts as long as the wait).
pub fn timeout_config() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(OPERATION_ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build()
}

/// The retry policy every client uses.
pub fn retry_config() -> RetryConfig {
    RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS)
}

/// Which certificates the SDK's HTTPS client trusts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Roots {
    /// [`AWS_ROOTS_PEM`] only: enough for every AWS endpoint, and five
    /// certificates to parse instead of the machine's whole bundle.
    Aws,
    /// The machine's CA bundle (`SSL_CERT_FILE`, `SSL_CERT_DIR` or the
    /// system's), read once per process.
    Native,
}

/// Where the credentials and the region come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// In Lambda: the credentials Lambda puts in the environment
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`)
    /// and the region in `AWS_REGION` (none if it is unset: the start then
    /// fails, naming it).
    LambdaEnvironment { region: Option<String> },
    /// The SDK's default credentials and region chains (environment,
    /// profiles, web identity, containers, IMDS).
    DefaultChains,
}

/// How the SDK is set up in this process, decided from its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdkSetup {
    pub roots: Roots,
    pub identity: Identity,
}

impl SdkSetup {
    /// The setup of this process, from its environment.
    pub fn from_process_env() -> SdkSetup {
        let vars: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)))
            .collect();
        SdkSetup::from_vars(vars.iter().map(|(n, v)| (n.as_str(), v.as_str())))
    }

    /// The setup for an environment of these variables (blank ones count as
    /// unset).
    pub fn from_vars<'a>(vars: impl IntoIterator<Item = (&'a str, &'a str)>) -> SdkSetup {
        let mut endpoint_overridden = false;
        let mut ignore_endpoints = false;
        let mut native_roots = None;
        let mut in_lambda = false;
        let mut access_key = false;
        let mut secret_key = false;
        let mut region = None;
        for (name, value) in vars {
            let value = value.trim();
            if value.is_empty() {
                continue;
            }
            match name {
                "AWS_ENDPOINT_URL" => endpoint_overridden = true,
                name if name.starts_with("AWS_ENDPOINT_URL_") => endpoint_overridden = true,
                // The SDK then ignores the endpoint variables (and so may we).
                "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS" => {
                    ignore_endpoints = value.eq_ignore_ascii_case("true")
                }
                NATIVE_ROOTS_VARIABLE => native_roots = Some(native_roots_flag(value)),
                "AWS_LAMBDA_FUNCTION_NAME" => in_lambda = true,
                "AWS_ACCESS_KEY_ID" => access_key = true,
                "AWS_SECRET_ACCESS_KEY" => secret_key = true,
                "AWS_REGION" => region = Some(value.to_string()),
                _ => {}
            }
        }
        let roots = match native_roots {
            Some(true) => Roots::Native,
            Some(false) => Roots::Aws,
            None if endpoint_overridden && !ignore_endpoints => Roots::Native,
            None => Roots::Aws,
        };
        // A Lambda function's role credentials are in its environment; a
        // Lambda without them (a local emulation of the runtime, a future
        // credentials source) gets the whole chain.
        let identity = if in_lambda && access_key && secret_key {
            Identity::LambdaEnvironment { region }
        } else {
            Identity::DefaultChains
        };
        SdkSetup { roots, identity }
    }
}

/// `LAMBENT_AWS_NATIVE_ROOTS`: `1`/`true`/`on` or `0`/`false`/`off`. Any other
/// value trusts the machine's roots, the choice under which every endpoint
/// that worked before still works, and says so in the log.
fn native_roots_flag(value: &str) -> bool {
    match value.to_ascii_lowercase().as_str() {
        "1" | "true" | "on" | "yes" => true,
        "0" | "false" | "off" | "no" => false,
        _ => {
            tracing::warn!(
                "{NATIVE_ROOTS_VARIABLE}={value:?} is neither 1 nor 0: trusting the machine's CA roots"
            );
            true
        }
    }
}

/// The one HTTPS client every SDK client of the process shares (and so one
/// connection pool): rustls on aws-lc, the SDK's default, trusting `roots`,
/// its connector made on first use ([`NoEarlyConnector`]).
pub fn http_client(roots: Roots) -> SharedHttpClient {
    SharedHttpClient::new(NoEarlyConnector(https_client(roots)))
}

/// The SDK's HTTPS client trusting `roots`.
fn https_client(roots: Roots) -> SharedHttpClient {
    let trust_store = match roots {
        Roots::Aws => TrustStore::empty()
            .with_native_roots(false)
            .with_pem_certificate(AWS_ROOTS_PEM.as_bytes()),
        Roots::Native => TrustStore::default().with_native_roots(true),
    };
    // Building a context validates nothing (the PEM is parsed when a
    // connector is made; the embedded one is checked by a test), so this
    // never falls back to the default (native roots) in practice.
    let tls = TlsContext::builder()
        .with_trust_store(trust_store)
        .build()
        .unwrap_or_default();
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
        .tls_context(tls)
        .build_https()
}

/// An HTTP client whose connector is made when a request first needs it.
/// The SDK's own builds a connector and drops it as each SDK client is
/// built (`validate_base_client_config`), only so that the machine's roots
/// are loaded at construction: a parse of the trust store per SDK client
/// (0.25 M instructions each with the AWS roots, about twice that with the
/// machine's) on top of the one connector every client then shares.
#[derive(Debug)]
pub struct NoEarlyConnector(pub SharedHttpClient);

impl HttpClient for NoEarlyConnector {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        self.0.http_connector(settings, components)
    }

    fn validate_final_config(
        &self,
        components: &RuntimeComponents,
        cfg: &ConfigBag,
    ) -> Result<(), BoxError> {
        self.0.validate_final_config(components, cfg)
    }

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        self.0.connector_metadata()
    }
}

/// The loader for `setup`: Lambent's timeouts, retry policy and HTTPS client,
/// and in Lambda the identity from the environment. Everything it does not
/// set comes from the default chains (endpoint overrides among them).
pub fn config_loader(setup: &SdkSetup) -> ConfigLoader {
    let loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client(setup.roots))
        .timeout_config(timeout_config())
        .retry_config(retry_config());
    match &setup.identity {
        Identity::LambdaEnvironment { region } => loader
            .region(region.clone().map(Region::new))
            .credentials_provider(EnvironmentVariableCredentialsProvider::new()),
        Identity::DefaultChains => loader,
    }
}

/// Loads the SDK configuration from the environment (region, credentials,
/// endpoint overrides, trust store: [`SdkSetup`]), with Lambent's timeouts
/// and retry policy. Call it once per cold start and build every client from
/// the result.
pub async fn load_sdk_config() -> SdkConfig {
    config_loader(&SdkSetup::from_process_env()).load().await
}

/// An SDK error rendered with its whole source chain (for logs only).
pub fn error_text<E: Error>(err: &E) -> String {
    DisplayErrorContext(err).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const LAMBDA: [(&str, &str); 5] = [
        ("AWS_LAMBDA_FUNCTION_NAME", "lambent-health"),
        ("AWS_REGION", "eu-west-3"),
        ("AWS_ACCESS_KEY_ID", "ASIAEXAMPLE"),
        ("AWS_SECRET_ACCESS_KEY", "secret"),
        ("AWS_SESSION_TOKEN", "token"),
    ];

    fn setup(vars: &[(&str, &str)]) -> SdkSetup {
        SdkSetup::from_vars(vars.iter().copied())
    }

    fn with(
        base: &[(&'static str, &'static str)],
        more: &[(&'static str, &'static str)],
    ) -> SdkSetup {
        setup(&[base, more].concat())
    }

    #[test]
    fn aws_endpoints_get_the_aws_roots_and_overridden_ones_the_machines() {
        assert_eq!(setup(&LAMBDA).roots, Roots::Aws);
        assert_eq!(setup(&[]).roots, Roots::Aws);
        let emulator = ("AWS_ENDPOINT_URL", "http://127.0.0.1:4566");
        assert_eq!(with(&LAMBDA, &[emulator]).roots, Roots::Native);
        assert_eq!(setup(&[emulator]).roots, Roots::Native);
        let one_service = ("AWS_ENDPOINT_URL_DYNAMODB", "https://ddb.internal");
        assert_eq!(with(&LAMBDA, &[one_service]).roots, Roots::Native);
        // Blank is unset; the SDK ignores the variables when told to.
        assert_eq!(
            with(&LAMBDA, &[("AWS_ENDPOINT_URL", " ")]).roots,
            Roots::Aws
        );
        assert_eq!(
            with(
                &[emulator],
                &[("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")]
            )
            .roots,
            Roots::Aws
        );
        // A variable of another name is no override.
        assert_eq!(
            with(
                &LAMBDA,
                &[("AWS_ENDPOINT_URLS", "x"), ("MY_AWS_ENDPOINT_URL", "x")]
            )
            .roots,
            Roots::Aws
        );
    }

    #[test]
    fn the_variable_overrules_the_endpoint_either_way() {
        let emulator = ("AWS_ENDPOINT_URL", "http://127.0.0.1:4566");
        for on in ["1", "true", "ON"] {
            assert_eq!(
                with(&LAMBDA, &[(NATIVE_ROOTS_VARIABLE, on)]).roots,
                Roots::Native
            );
        }
        for off in ["0", "false", "Off"] {
            let vars = [emulator, (NATIVE_ROOTS_VARIABLE, off)];
            assert_eq!(with(&LAMBDA, &vars).roots, Roots::Aws, "{off}");
        }
        // Not understood: the roots under which everything still connects.
        assert_eq!(
            with(&LAMBDA, &[(NATIVE_ROOTS_VARIABLE, "maybe")]).roots,
            Roots::Native
        );
        assert_eq!(
            with(&LAMBDA, &[(NATIVE_ROOTS_VARIABLE, "")]).roots,
            Roots::Aws
        );
    }

    #[test]
    fn lambda_takes_its_identity_from_the_environment_and_nothing_else_does() {
        let lambda = Identity::LambdaEnvironment {
            region: Some("eu-west-3".into()),
        };
        assert_eq!(setup(&LAMBDA).identity, lambda);
        // Whatever the endpoint and roots.
        let emulator = ("AWS_ENDPOINT_URL", "http://127.0.0.1:4566");
        assert_eq!(with(&LAMBDA, &[emulator]).identity, lambda);
        // Outside Lambda: the default chains, keys in the environment or not.
        assert_eq!(setup(&LAMBDA[1..]).identity, Identity::DefaultChains);
        assert_eq!(setup(&[]).identity, Identity::DefaultChains);
        // In Lambda without credentials in the environment: the chains too.
        assert_eq!(setup(&LAMBDA[..2]).identity, Identity::DefaultChains);
        let no_secret = [LAMBDA[0], LAMBDA[1], LAMBDA[2]];
        assert_eq!(setup(&no_secret).identity, Identity::DefaultChains);
        let blank_key = [LAMBDA[0], LAMBDA[1], ("AWS_ACCESS_KEY_ID", ""), LAMBDA[3]];
        assert_eq!(setup(&blank_key).identity, Identity::DefaultChains);
        // In Lambda without a region: none, so the start fails naming it.
        let no_region = [LAMBDA[0], LAMBDA[2], LAMBDA[3]];
        assert_eq!(
            setup(&no_region).identity,
            Identity::LambdaEnvironment { region: None }
        );
    }

    #[tokio::test]
    async fn the_loaded_config_carries_the_setups_identity_and_one_http_client() {
        let lambda = SdkSetup {
            roots: Roots::Aws,
            identity: Identity::LambdaEnvironment {
                region: Some("eu-west-3".into()),
            },
        };
        let sdk = config_loader(&lambda).load().await;
        assert_eq!(sdk.region().map(|r| r.as_ref()), Some("eu-west-3"));
        let credentials = format!("{:?}", sdk.credentials_provider());
        assert!(
            credentials.contains("EnvironmentVariableCredentialsProvider"),
            "{credentials}"
        );
        assert!(sdk.http_client().is_some());

        let no_region = SdkSetup {
            roots: Roots::Aws,
            identity: Identity::LambdaEnvironment { region: None },
        };
        assert!(config_loader(&no_region).load().await.region().is_none());

        // (A region given, so the test does not wait for IMDS.)
        let elsewhere = SdkSetup {
            roots: Roots::Native,
            identity: Identity::DefaultChains,
        };
        let sdk = config_loader(&elsewhere)
            .region(Region::new("us-east-1"))
            .load()
            .await;
        let credentials = format!("{:?}", sdk.credentials_provider());
        assert!(
            credentials.contains("DefaultCredentialsChain"),
            "{credentials}"
        );
        assert!(sdk.http_client().is_some());
    }

    fn test_credentials() -> aws_sdk_dynamodb::config::Credentials {
        aws_sdk_dynamodb::config::Credentials::new("AKIDTEST", "secret", None, None, "test")
    }

    /// A plain-HTTP endpoint that answers every request as DynamoDB's
    /// ListTables, and counts the connections it accepts.
    async fn list_tables_endpoint() -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buffer = [0u8; 4096];
                    loop {
                        let Ok(n) = socket.read(&mut buffer).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        request.extend_from_slice(&buffer[..n]);
                        // A whole request: its head and its body's length.
                        let text = String::from_utf8_lossy(&request).to_ascii_lowercase();
                        let Some(head_end) = text.find("\r\n\r\n") else {
                            continue;
                        };
                        let length = text[..head_end]
                            .lines()
                            .find_map(|line| line.strip_prefix("content-length:"))
                            .and_then(|value| value.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        if request.len() < head_end + 4 + length {
                            continue;
                        }
                        request.drain(..head_end + 4 + length);
                        let body = r#"{"TableNames":[]}"#;
                        let response = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/x-amz-json-1.0\r\n\
                             content-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if socket.write_all(response.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        (url, connections)
    }

    #[tokio::test]
    async fn every_client_shares_the_one_http_client_over_plain_http_too() {
        for roots in [Roots::Aws, Roots::Native] {
            let (url, connections) = list_tables_endpoint().await;
            let setup = SdkSetup {
                roots,
                identity: Identity::LambdaEnvironment {
                    region: Some("us-east-1".into()),
                },
            };
            let sdk = config_loader(&setup)
                .endpoint_url(&url)
                .credentials_provider(test_credentials())
                .load()
                .await;
            // Two clients built from the configuration, one call each, one
            // after the other: one pool, so the second reuses the
            // connection the first opened (each client's own default HTTP
            // client would open its own).
            for _ in 0..2 {
                let client = aws_sdk_dynamodb::Client::new(&sdk);
                let tables = client.list_tables().send().await.unwrap();
                assert_eq!(tables.table_names(), &[] as &[String]);
            }
            assert_eq!(connections.load(Ordering::SeqCst), 1, "{roots:?}");
        }
    }

    /// An HTTP client that counts the connectors asked of it before any
    /// request (`validate_base_client_config`) and for requests.
    #[derive(Debug)]
    struct Counting {
        inner: SharedHttpClient,
        early: Arc<AtomicUsize>,
        for_requests: Arc<AtomicUsize>,
    }

    impl HttpClient for Counting {
        fn http_connector(
            &self,
            settings: &HttpConnectorSettings,
            components: &RuntimeComponents,
        ) -> SharedHttpConnector {
            self.for_requests.fetch_add(1, Ordering::SeqCst);
            self.inner.http_connector(settings, components)
        }

        fn validate_base_client_config(
            &self,
            components: &aws_sdk_dynamodb::config::RuntimeComponentsBuilder,
            cfg: &ConfigBag,
        ) -> Result<(), BoxError> {
            self.early.fetch_add(1, Ordering::SeqCst);
            self.inner.validate_base_client_config(components, cfg)
        }
    }

    #[tokio::test]
    async fn sdk_clients_make_no_connector_of_their_own_before_a_request() {
        for skip_early in [false, true] {
            let (url, connections) = list_tables_endpoint().await;
            let early = Arc::new(AtomicUsize::new(0));
            let for_requests = Arc::new(AtomicUsize::new(0));
            let counting = SharedHttpClient::new(Counting {
                inner: https_client(Roots::Aws),
                early: early.clone(),
                for_requests: for_requests.clone(),
            });
            let client = match skip_early {
                true => SharedHttpClient::new(NoEarlyConnector(counting)),
                false => counting,
            };
            let sdk = aws_config::defaults(BehaviorVersion::latest())
                .http_client(client)
                .endpoint_url(&url)
                .region(Region::new("us-east-1"))
                .credentials_provider(test_credentials())
                .load()
                .await;
            for _ in 0..2 {
                let client = aws_sdk_dynamodb::Client::new(&sdk);
                client.list_tables().send().await.unwrap();
            }
            // The SDK asks for a connector as it builds each client; the
            // wrapper declines. Requests get theirs either way.
            let expected_early = if skip_early { 0 } else { 2 };
            assert_eq!(early.load(Ordering::SeqCst), expected_early);
            assert_eq!(for_requests.load(Ordering::SeqCst), 2);
            assert_eq!(connections.load(Ordering::SeqCst), 1);
        }
    }

    #[test]
    fn the_embedded_pem_is_the_five_amazon_trust_services_roots() {
        let certificates = CertificateDer::pem_slice_iter(AWS_ROOTS_PEM.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        assert_eq!(certificates.len(), 5);
        let mut store = rustls::RootCertStore::empty();
        let (valid, invalid) = store.add_parsable_certificates(certificates);
        assert_eq!((valid, invalid), (5, 0));
        assert_eq!(store.roots.len(), 5);
        let subjects: Vec<String> = store
            .roots
            .iter()
            .map(|anchor| String::from_utf8_lossy(anchor.subject.as_ref()).into_owned())
            .collect();
        for name in [
            "Amazon Root CA 1",
            "Amazon Root CA 2",
            "Amazon Root CA 3",
            "Amazon Root CA 4",
            "Starfield Services Root Certificate Authority - G2",
        ] {
            assert!(
                subjects.iter().any(|subject| subject.contains(name)),
                "{name} missing"
            );
        }
    }
}
