//! Logins for the API and the web UI on a LAN-facing install (forced here with
//! `http.require_login`, since tests only use loopback): the admin password set once with the
//! setup code, HttpOnly SameSite=Strict session cookies, cross-origin refusal, lockout after wrong
//! passwords, the CLI's local token, and nothing secret in files or logs.

use std::time::Duration;

use gatehouse_tests::{gatehouse_bin, Daemon};
use reqwest::header::{COOKIE, ORIGIN, SET_COOKIE};
use serde_json::{json, Value};

const PASSWORD: &str = "correct horse battery";

async fn call(
    daemon: &Daemon,
    method: reqwest::Method,
    path: &str,
    cookie: Option<&str>,
    body: Option<Value>,
) -> (u16, Value, Option<String>) {
    let mut request = reqwest::Client::new().request(method, daemon.http(path));
    if let Some(cookie) = cookie {
        request = request.header(COOKIE, cookie);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status().as_u16();
    let set_cookie = response.headers().get(SET_COOKIE).map(|v| v.to_str().unwrap().to_string());
    (status, response.json().await.unwrap_or(Value::Null), set_cookie)
}

#[tokio::test]
async fn a_lan_facing_install_needs_a_login_and_refuses_other_origins() {
    let mut daemon = Daemon::start_with_config("[http]\nrequire_login = true\n", &[]);
    use reqwest::Method;

    // Before setup: only health and the auth status are open.
    assert_eq!(call(&daemon, Method::GET, "/api/health", None, None).await.0, 200);
    let (status, body, _) = call(&daemon, Method::GET, "/api/devices", None, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("login_required")), "{body}");
    assert!(body["error"]["message"].as_str().unwrap().contains("setup code"), "{body}");
    let (_, auth, _) = call(&daemon, Method::GET, "/api/auth", None, None).await;
    assert_eq!(auth, json!({"required": true, "configured": false, "authenticated": false}));
    let ws = tokio_tungstenite::connect_async(format!("ws://{}/api/live", daemon.runtime.http)).await;
    assert!(
        matches!(ws, Err(tokio_tungstenite::tungstenite::Error::Http(ref r)) if r.status() == 401),
        "the live stream needs a session too"
    );

    // First run: the setup code from the data directory (and the log) sets the password once.
    let code = std::fs::read_to_string(daemon.data_dir.join("setup-code")).expect("setup code file");
    assert!(daemon.log().contains(code.trim()), "the log shows where to find it");
    let no_code = call(&daemon, Method::POST, "/api/auth/setup", None, Some(json!({"password": PASSWORD}))).await;
    assert_eq!((no_code.0, no_code.1["error"]["code"].as_str()), (403, Some("setup_code")));
    let weak =
        call(&daemon, Method::POST, "/api/auth/setup", None, Some(json!({"password": "short", "setupCode": code})))
            .await;
    assert_eq!((weak.0, weak.1["error"]["code"].as_str()), (400, Some("weak_password")));
    let (status, _, cookie) =
        call(&daemon, Method::POST, "/api/auth/setup", None, Some(json!({"password": PASSWORD, "setupCode": code})))
            .await;
    assert_eq!(status, 201);
    let cookie = cookie.expect("a session cookie");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    let session = cookie.split(';').next().unwrap().to_string();
    assert!(!daemon.data_dir.join("setup-code").exists(), "the setup code is used up");
    let again =
        call(&daemon, Method::POST, "/api/auth/setup", None, Some(json!({"password": PASSWORD, "setupCode": code})))
            .await;
    assert_eq!(again.0, 409, "the password can be set only once");

    // With the session the API works; from another origin it does not, session or not.
    assert_eq!(call(&daemon, Method::GET, "/api/devices", Some(&session), None).await.0, 200);
    let cross = reqwest::Client::new()
        .post(daemon.http("/api/pairing"))
        .header(COOKIE, &session)
        .header(ORIGIN, "http://evil.example")
        .json(&json!({"minutes": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status().as_u16(), 403);
    assert_eq!(call(&daemon, Method::POST, "/api/pairing", Some(&session), Some(json!({"minutes": 1}))).await.0, 200);

    // The CLI on the gateway's host uses the local token instead of a login.
    let output = std::process::Command::new(gatehouse_bin())
        .args(["devices", "--data-dir"])
        .arg(&daemon.data_dir)
        .output()
        .unwrap();
    assert!(output.status.success(), "CLI: {}", String::from_utf8_lossy(&output.stderr));
    let forged =
        reqwest::Client::new().get(daemon.http("/api/devices")).bearer_auth("0".repeat(64)).send().await.unwrap();
    assert_eq!(forged.status().as_u16(), 401);

    // Logout ends the session.
    assert_eq!(call(&daemon, Method::POST, "/api/auth/logout", Some(&session), None).await.0, 200);
    assert_eq!(call(&daemon, Method::GET, "/api/devices", Some(&session), None).await.0, 401);

    // Login; wrong passwords lock the address out.
    let (status, _, cookie) =
        call(&daemon, Method::POST, "/api/auth/login", None, Some(json!({"password": PASSWORD}))).await;
    assert_eq!(status, 200);
    assert!(cookie.is_some());
    for _ in 0..5 {
        let wrong =
            call(&daemon, Method::POST, "/api/auth/login", None, Some(json!({"password": "guess-guess-guess"}))).await;
        assert_eq!(wrong.0, 401);
    }
    let locked = call(&daemon, Method::POST, "/api/auth/login", None, Some(json!({"password": PASSWORD}))).await;
    assert_eq!((locked.0, locked.1["error"]["code"].as_str()), (429, Some("too_many_attempts")), "{}", locked.1);

    // Secrets: the password is stored hashed, in a private file, and never logged.
    let stored = std::fs::read_to_string(daemon.data_dir.join("admin-password")).unwrap();
    assert!(stored.starts_with("$argon2id$") && !stored.contains(PASSWORD));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        for file in ["admin-password", "api-token"] {
            let mode = std::fs::metadata(daemon.data_dir.join(file)).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600, "{file}");
        }
    }
    daemon.stop();
    assert!(!daemon.log().contains(PASSWORD), "the password never reaches the log");

    // The password survives a restart; sessions do not.
    daemon.restart();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, auth, _) = call(&daemon, Method::GET, "/api/auth", None, None).await;
    assert_eq!(auth, json!({"required": true, "configured": true, "authenticated": false}));
}

#[tokio::test]
async fn a_loopback_install_needs_no_login_but_still_refuses_other_origins() {
    let daemon = Daemon::start(&[]);
    let (status, auth, _) = call(&daemon, reqwest::Method::GET, "/api/auth", None, None).await;
    assert_eq!((status, auth["required"].as_bool()), (200, Some(false)));
    let cross = reqwest::Client::new()
        .post(daemon.http("/api/pairing"))
        .header(ORIGIN, "http://evil.example")
        .json(&json!({"minutes": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(cross.status().as_u16(), 403, "a web page cannot drive the local API");
}
