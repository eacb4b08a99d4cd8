//! The command's environment on Windows: the policy's environment (same model as Linux) plus
//! `TEMP`/`TMP` and, with the network off in a tier that cannot block it, advisory offline
//! variables. Also the UTF-16 environment block and the command line that `CreateProcess*W`
//! take.

use crate::input::Network;
use crate::path::WinPath;

/// Proxy that refuses every connection (the discard port on loopback): clients that honour proxy
/// variables fail fast instead of reaching the network.
pub const DEAD_PROXY: &str = "http://127.0.0.1:9";

/// Variables set when the network is off. **Advisory only**: a program that ignores them still
/// reaches the network unless the tier blocks it (the elevated tier's firewall rules do; the
/// unelevated tier does not).
pub fn offline_vars() -> Vec<(&'static str, &'static str)> {
    vec![
        ("STOCKADE_NETWORK", "off"),
        ("HTTP_PROXY", DEAD_PROXY),
        ("HTTPS_PROXY", DEAD_PROXY),
        ("ALL_PROXY", DEAD_PROXY),
        ("NO_PROXY", ""),
        ("CARGO_NET_OFFLINE", "true"),
        ("PIP_NO_INDEX", "1"),
        ("NPM_CONFIG_OFFLINE", "true"),
        ("GIT_ALLOW_PROTOCOL", "file"),
    ]
}

/// Where the sandbox temp dir goes when the plan does not say: `<workspace>\.stockade-tmp`
/// is *not* used (the workspace should not fill with temp files); instead a per-run directory
/// under the caller's local app data, which the backend adds as a writable root.
pub fn default_temp_dir(
    local_app_data: &WinPath,
    run_id: &str,
) -> Result<WinPath, crate::path::WinPathError> {
    local_app_data.join(&format!("Stockade\\tmp\\{run_id}"))
}

fn same_name(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b) || a.to_uppercase() == b.to_uppercase()
}

/// The final environment: `base` with names deduplicated case-insensitively (last one wins, as on
/// Windows), `TEMP`/`TMP` pointing at `temp`, and offline variables when `network` is off and
/// `advisory_offline` is true. Sorted case-insensitively, as `CreateProcess` wants.
pub fn sandbox_env(
    base: &[(String, String)],
    temp: Option<&WinPath>,
    network: Network,
    advisory_offline: bool,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| {
        out.retain(|(n, _)| !same_name(n, k));
        out.push((k.to_string(), v.to_string()));
    };
    for (k, v) in base {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            continue;
        }
        set(k, v);
    }
    if let Some(t) = temp {
        set("TEMP", &t.as_string());
        set("TMP", &t.as_string());
    }
    if network == Network::Off && advisory_offline {
        for (k, v) in offline_vars() {
            set(k, v);
        }
    }
    out.sort_by_key(|a| a.0.to_uppercase());
    out
}

/// The UTF-16 environment block: `NAME=value\0` entries, then a final `\0`.
pub fn env_block(env: &[(String, String)]) -> Vec<u16> {
    let mut out = Vec::new();
    for (k, v) in env {
        out.extend(format!("{k}={v}").encode_utf16());
        out.push(0);
    }
    if env.is_empty() {
        out.push(0);
    }
    out.push(0);
    out
}

/// Quotes one argument so that `CommandLineToArgvW` and the MSVC runtime read it back unchanged.
pub fn quote_arg(arg: &str) -> String {
    if !arg.is_empty() && !arg.contains([' ', '\t', '\n', '\x0b', '"']) {
        return arg.to_string();
    }
    let mut out = String::from("\"");
    let mut backslashes = 0usize;
    for c in arg.chars() {
        match c {
            '\\' => backslashes += 1,
            '"' => {
                out.push_str(&"\\".repeat(backslashes * 2 + 1));
                out.push('"');
                backslashes = 0;
            }
            _ => {
                out.push_str(&"\\".repeat(backslashes));
                out.push(c);
                backslashes = 0;
            }
        }
    }
    out.push_str(&"\\".repeat(backslashes * 2));
    out.push('"');
    out
}

/// A full command line: the program, then each argument, quoted.
pub fn command_line(program: &str, args: &[String]) -> String {
    let mut parts = vec![quote_arg(program)];
    parts.extend(args.iter().map(|a| quote_arg(a)));
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn temp_and_offline_vars_override_case_insensitively() {
        let t = WinPath::parse(r"C:\Users\me\AppData\Local\Stockade\tmp\r1").expect("path");
        let env = sandbox_env(
            &[
                kv("Path", r"C:\Windows"),
                kv("temp", r"C:\Temp"),
                kv("http_proxy", "http://corp:8080"),
            ],
            Some(&t),
            Network::Off,
            true,
        );
        let get = |n: &str| {
            env.iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(get("TEMP"), vec![t.as_string()]);
        assert_eq!(get("TMP"), vec![t.as_string()]);
        assert_eq!(get("HTTP_PROXY"), vec![DEAD_PROXY.to_string()]);
        assert_eq!(get("PATH"), vec![r"C:\Windows".to_string()]);
        let names: Vec<String> = env.iter().map(|(k, _)| k.to_uppercase()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);

        let online = sandbox_env(
            &[kv("http_proxy", "http://corp:8080")],
            None,
            Network::On,
            true,
        );
        assert_eq!(online, vec![kv("http_proxy", "http://corp:8080")]);
    }

    #[test]
    fn env_block_is_double_nul_terminated() {
        let b = env_block(&[kv("A", "1"), kv("B", "ü")]);
        assert_eq!(String::from_utf16_lossy(&b), "A=1\0B=ü\0\0");
        assert_eq!(env_block(&[]), vec![0, 0]);
    }

    #[test]
    fn quoting_follows_the_msvc_rules() {
        assert_eq!(quote_arg("plain"), "plain");
        assert_eq!(quote_arg(""), "\"\"");
        assert_eq!(quote_arg("with space"), "\"with space\"");
        assert_eq!(quote_arg(r#"a"b"#), r#""a\"b""#);
        assert_eq!(quote_arg(r"C:\dir with space\"), r#""C:\dir with space\\""#);
        assert_eq!(quote_arg(r"C:\no\space"), r"C:\no\space");
        assert_eq!(
            command_line(
                r"C:\Program Files\Git\bin\git.exe",
                &["status".into(), "ünï code".into()]
            ),
            r#""C:\Program Files\Git\bin\git.exe" status "ünï code""#
        );
    }
}
