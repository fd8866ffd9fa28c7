//! `berth-monitor`: the per-container supervisor process (see
//! `berth_engine::containers::monitor`). Started by the engine, not by users.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    std::process::exit(berth_engine::containers::monitor::main_with_args(&args));
}
