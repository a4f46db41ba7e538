//! The CLI's client for a running gateway's HTTP API. Finds the gateway through `--api`, or the
//! runtime file in the data directory, and turns API errors into one readable line.

use std::path::PathBuf;

use clap::Args;
use gateway_core::config::Config;
use gateway_core::gateway::RuntimeInfo;
use serde_json::Value;

#[derive(Args, Clone)]
pub struct ApiArgs {
    /// Base URL of the gateway's API, e.g. http://127.0.0.1:8080 (default: the gateway running on
    /// this machine's data directory).
    #[arg(long, value_name = "URL", global = true)]
    pub api: Option<String>,
    /// Data directory of the running gateway, used to find it (default: the platform's).
    #[arg(long, value_name = "DIR", global = true)]
    pub data_dir: Option<PathBuf>,
}

pub struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    pub fn connect(args: &ApiArgs) -> Result<Api, String> {
        let mut config = Config::default();
        config.data_dir = args.data_dir.clone();
        let data_dir = config.resolved_data_dir();
        let base = match &args.api {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => {
                let runtime = RuntimeInfo::read(&data_dir).ok_or_else(|| {
                    format!(
                        "no running gateway found in {} (start it with `gatehouse run`, or pass --api URL / --data-dir DIR)",
                        data_dir.display()
                    )
                })?;
                format!("http://{}", runtime.http)
            }
        };
        let mut headers = reqwest::header::HeaderMap::new();
        // Audit entries record what made each change.
        headers.insert("x-gatehouse-client", reqwest::header::HeaderValue::from_static("cli"));
        // The local API token (readable only by the gateway's user) stands in for a login.
        if let Ok(token) = std::fs::read_to_string(data_dir.join(gateway_core::api::API_TOKEN_FILE)) {
            if let Ok(value) = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.trim())) {
                headers.insert(reqwest::header::AUTHORIZATION, value);
            }
        }
        let http = reqwest::Client::builder().default_headers(headers).build().map_err(|e| e.to_string())?;
        Ok(Api { base, http })
    }

    pub async fn get(&self, path: &str) -> Result<Value, String> {
        self.send(self.http.get(self.url(path))).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Result<Value, String> {
        self.send(self.http.post(self.url(path)).json(&body)).await
    }

    pub async fn delete(&self, path: &str) -> Result<Value, String> {
        self.send(self.http.delete(self.url(path))).await
    }

    /// A GET whose answer is a file (backup, export).
    pub async fn download(&self, path: &str) -> Result<Vec<u8>, String> {
        let response = self
            .http
            .get(self.url(path))
            .send()
            .await
            .map_err(|e| format!("cannot reach the gateway at {}: {e}", self.base))?;
        if !response.status().is_success() {
            return self.send_error(response).await;
        }
        Ok(response.bytes().await.map_err(|e| e.to_string())?.to_vec())
    }

    /// A POST of a file as the body.
    pub async fn upload(&self, path: &str, body: Vec<u8>) -> Result<Value, String> {
        self.send(self.http.post(self.url(path)).body(body)).await
    }

    async fn send_error<T>(&self, response: reqwest::Response) -> Result<T, String> {
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let message = body["error"]["message"].as_str().map(str::to_string).unwrap_or_else(|| body.to_string());
        Err(format!("{status}: {message}"))
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value, String> {
        let response = request.send().await.map_err(|e| format!("cannot reach the gateway at {}: {e}", self.base))?;
        let status = response.status();
        let text = response.text().await.map_err(|e| e.to_string())?;
        let body: Value =
            if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) };
        if status.is_success() {
            Ok(body)
        } else {
            let message = body["error"]["message"].as_str().map(str::to_string).unwrap_or_else(|| body.to_string());
            Err(format!("{status}: {message}"))
        }
    }
}

/// Runs an async CLI command on a small runtime and maps its error to exit status 1.
pub fn block_on(future: impl std::future::Future<Output = Result<(), String>>) -> std::process::ExitCode {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    match runtime.block_on(future) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("gatehouse: {message}");
            std::process::ExitCode::FAILURE
        }
    }
}
