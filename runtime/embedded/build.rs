//! Compiles the crate's two programs into static, libc-free executables, which `src/lib.rs`
//! embeds with `include_bytes!`: `hello/hello.rs` to `$OUT_DIR/hello` (the `hello` image) and
//! `init/init.rs` to `$OUT_DIR/init` (the init process of `docker run --init`). Both include
//! `nostd/rt.rs`.
//!
//! It uses the same `rustc` that builds the crate (`$RUSTC`) and the target's default linker
//! (`cc`), so it needs nothing beyond what building the workspace already needs. The program is
//! `#![no_std]`/`#![no_main]` with its own `_start` and raw system calls; they exist for Linux on
//! x86_64 and aarch64. For any other target the build writes empty files and sets the cfg
//! `berth_programs_unsupported`, and the crate reports both as unavailable.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    const PROGRAMS: [&str; 2] = ["hello", "init"];
    for program in PROGRAMS {
        println!("cargo::rerun-if-changed={program}/{program}.rs");
    }
    println!("cargo::rerun-if-changed=nostd/rt.rs");
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rustc-check-cfg=cfg(berth_programs_unsupported)");

    let out_dir = PathBuf::from(var("OUT_DIR"));
    let target = var("TARGET");

    let arch = var("CARGO_CFG_TARGET_ARCH");
    let os = var("CARGO_CFG_TARGET_OS");
    if os != "linux" || !(arch == "x86_64" || arch == "aarch64") {
        println!(
            "cargo::warning=berth-embedded: no hello or init program for {target}; \
             the embedded image and --init are unavailable on this target"
        );
        println!("cargo::rustc-cfg=berth_programs_unsupported");
        for program in PROGRAMS {
            let out = out_dir.join(program);
            if let Err(e) = std::fs::write(&out, b"") {
                fail(&format!("cannot write {}: {e}", out.display()));
            }
        }
        return;
    }
    for program in PROGRAMS {
        compile(program, &target, &out_dir.join(program));
    }
}

/// Compiles `<program>/<program>.rs` for `target` into the static executable `out`.
fn compile(program: &str, target: &str, out: &std::path::Path) {
    let manifest_dir = PathBuf::from(var("CARGO_MANIFEST_DIR"));
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let source = manifest_dir.join(program).join(format!("{program}.rs"));
    let mut cmd = Command::new(&rustc);
    cmd.arg(&source)
        .args([
            "--edition",
            "2021",
            "--crate-type",
            "bin",
            "--crate-name",
            program,
        ])
        .args(["--target", target])
        .args(["-C", "opt-level=z"])
        .args(["-C", "panic=abort"])
        .args(["-C", "relocation-model=static"])
        .args(["-C", "target-feature=+crt-static"])
        .args(["-C", "codegen-units=1"])
        // Fat LTO also drops the unwinding glue of the prebuilt `core` (built with
        // panic=unwind), which would otherwise need `rust_eh_personality` from std.
        .args(["-C", "lto=fat"])
        .args(["-C", "debuginfo=0"])
        .args(["-C", "strip=symbols"])
        .args(["-C", "link-arg=-nostartfiles"])
        .args(["-C", "link-arg=-nostdlib"])
        .args(["-C", "link-arg=-static"])
        // No build-specific path may leak into the binary, so the image digests do not depend
        // on where the workspace is checked out.
        .arg(format!(
            "--remap-path-prefix={}=berth-embedded",
            manifest_dir.display()
        ))
        .arg("-o")
        .arg(out)
        // Flags meant for the workspace's own crates are not meant for this program.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("RUSTFLAGS");
    // ...but a sysroot is: a cross build (guest-image/cross-sysroot.sh) brings the target's
    // `core` only through it.
    println!("cargo::rerun-if-env-changed=CARGO_ENCODED_RUSTFLAGS");
    if let Some(sysroot) = sysroot_flag(&env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default()) {
        cmd.arg(format!("--sysroot={sysroot}"));
    }
    // A linker configured for the target (as cargo's `target.<triple>.linker` would be, when
    // set through the environment) is needed for cross builds.
    let linker_var = format!(
        "CARGO_TARGET_{}_LINKER",
        target.to_uppercase().replace(['-', '.'], "_")
    );
    println!("cargo::rerun-if-env-changed={linker_var}");
    if let Some(linker) = env::var_os(&linker_var) {
        let mut arg = std::ffi::OsString::from("linker=");
        arg.push(linker);
        cmd.arg("-C").arg(arg);
    }

    let output = match cmd.output() {
        Ok(output) => output,
        Err(e) => fail(&format!(
            "cannot run {}: {e}",
            PathBuf::from(&rustc).display()
        )),
    };
    if !output.status.success() {
        fail(&format!(
            "compiling {} failed ({}):\n{}",
            source.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        ));
    }
}

/// The `--sysroot` among cargo's encoded flags (separated by 0x1f), in either spelling.
fn sysroot_flag(encoded: &str) -> Option<&str> {
    let mut flags = encoded.split('\x1f');
    while let Some(flag) = flags.next() {
        if let Some(path) = flag.strip_prefix("--sysroot=") {
            return Some(path);
        }
        if flag == "--sysroot" {
            return flags.next();
        }
    }
    None
}

fn var(name: &str) -> String {
    match env::var(name) {
        Ok(value) => value,
        Err(e) => fail(&format!("environment variable {name}: {e}")),
    }
}

fn fail(message: &str) -> ! {
    eprintln!("berth-embedded build script: {message}");
    std::process::exit(1)
}
