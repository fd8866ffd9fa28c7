//! Writes the embedded `hello` image as an OCI image layout, e.g. to seed a registry:
//!
//! ```text
//! cargo run -p berth-embedded --example write_oci_layout -- /tmp/hello-layout
//! skopeo copy oci:/tmp/hello-layout:latest docker://127.0.0.1:5000/hello:latest
//! ```

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: write_oci_layout <dir>");
        return ExitCode::from(2);
    };
    if !berth_embedded::is_available() {
        eprintln!("this build carries no hello program (unsupported target)");
        return ExitCode::FAILURE;
    }
    match berth_embedded::write_oci_layout(&dir) {
        Ok(()) => {
            let image = berth_embedded::hello_image();
            println!("{} {}", dir.display(), image.manifest.digest);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("writing {}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}
