//! `ovn-k8s-cni-overlay`: the CNI plugin executed by the container runtime.
//! It validates the request and forwards it to `ovnk node`; see `ovnk_cni::shim`.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use ovnk_cni::shim::{run, ShimOutcome};
use ovnk_cni::{CniError, ErrorCode, LATEST_VERSION};
use tokio::io::AsyncReadExt;

/// Network configurations are small; anything bigger is not one.
const MAX_STDIN_BYTES: u64 = 1 << 20;
/// The runtime writes stdin and closes it at once; never wait forever on it.
const STDIN_TIMEOUT: Duration = Duration::from_secs(30);

async fn read_stdin() -> Result<Vec<u8>, CniError> {
    let mut buf = Vec::new();
    let mut stdin = tokio::io::stdin().take(MAX_STDIN_BYTES + 1);
    let read = stdin.read_to_end(&mut buf);
    match tokio::time::timeout(STDIN_TIMEOUT, read).await {
        Err(_) => Err(CniError::new(
            ErrorCode::IoFailure,
            format!("stdin was not closed within {STDIN_TIMEOUT:?}"),
        )),
        Ok(Err(e)) => Err(CniError::new(
            ErrorCode::IoFailure,
            format!("reading stdin: {e}"),
        )),
        Ok(Ok(_)) if buf.len() as u64 > MAX_STDIN_BYTES => Err(CniError::decode(format!(
            "network configuration is larger than {MAX_STDIN_BYTES} bytes"
        ))),
        Ok(Ok(_)) => Ok(buf),
    }
}

async fn main_async() -> ShimOutcome {
    let env: BTreeMap<String, String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .filter(|(k, _)| k.starts_with("CNI_"))
        .collect();
    // VERSION may come without stdin; don't wait for it then.
    let stdin = if env.get("CNI_COMMAND").map(String::as_str) == Some("VERSION") {
        Vec::new()
    } else {
        match read_stdin().await {
            Ok(b) => b,
            Err(e) => return ShimOutcome::error(&e, LATEST_VERSION),
        }
    };
    run(&env, &stdin).await
}

fn main() {
    let outcome = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => {
            let outcome = rt.block_on(main_async());
            // A stdin read that timed out still occupies a blocking thread;
            // dropping the runtime normally would wait for it.
            rt.shutdown_background();
            outcome
        }
        Err(e) => ShimOutcome::error(
            &CniError::new(ErrorCode::IoFailure, format!("starting runtime: {e}")),
            LATEST_VERSION,
        ),
    };
    for line in &outcome.stderr {
        eprintln!("{line}");
    }
    if !outcome.stdout.is_empty() {
        let mut out = std::io::stdout().lock();
        // Nothing sensible is left to do if stdout is gone.
        let _ = writeln!(out, "{}", outcome.stdout);
        let _ = out.flush();
    }
    std::process::exit(outcome.exit_code);
}
