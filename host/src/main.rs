//! The `berth` command. The engine daemon and its CLI land with the engine
//! issue; until then this binary only reports its version and points at the
//! runtime binary, `berth-runc`, which runs OCI bundles today.

fn main() {
    let arg = std::env::args().nth(1);
    match arg.as_deref() {
        Some("version") | Some("--version") | Some("-V") => {
            println!("berth {}", env!("CARGO_PKG_VERSION"));
        }
        _ => {
            eprintln!(
                "berth {}: the engine CLI is not built yet; use `berth-runc` to run OCI bundles",
                env!("CARGO_PKG_VERSION")
            );
            std::process::exit(2);
        }
    }
}
