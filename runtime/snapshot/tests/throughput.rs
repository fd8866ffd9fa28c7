//! Extraction throughput of a generated ~200 MB gzip layer. Ignored by default:
//! `cargo test -p berth-snapshot --release --test throughput -- --ignored --nocapture`
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::time::Instant;

use berth_snapshot::{unpack_layer, UnpackOptions};
use common::{RawTar, H};

/// Compressible but not trivial data (about 3:1 with gzip), like binaries and text.
fn fill(buf: &mut [u8], seed: &mut u64) {
    const WORDS: [&[u8]; 8] = [
        b"container ",
        b"\x00\x00\x00\x01",
        b"layer",
        b"\x7fELF\x02\x01",
        b"overlay\n",
        b"snapshot",
        b"libc.so.6",
        b"\xe8\x00\x00",
    ];
    let mut i = 0;
    while i < buf.len() {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        if *seed % 3 == 0 {
            let w = WORDS[(*seed >> 8) as usize % WORDS.len()];
            let n = w.len().min(buf.len() - i);
            buf[i..i + n].copy_from_slice(&w[..n]);
            i += n;
        } else {
            buf[i] = (*seed >> 24) as u8;
            i += 1;
        }
    }
}

fn make_layer(total: usize) -> (Vec<u8>, usize, usize) {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
    let mut seed = 0x9e3779b97f4a7c15u64;
    let mut written = 0;
    let mut files = 0;
    let mut buf = vec![0u8; 4 << 20];
    let mut t = RawTar::new();
    let mut d = 0;
    while written < total {
        if files % 200 == 0 {
            d += 1;
            t.dir(&format!("usr/lib/d{d}/"));
        }
        // A mix: many small files, some large ones.
        let size = match files % 10 {
            0 => 2 << 20,
            1..=3 => 200 << 10,
            _ => 8 << 10,
        };
        fill(&mut buf[..size], &mut seed);
        t.header(&H {
            name: format!("usr/lib/d{d}/f{files}").as_bytes(),
            size: size as u64,
            mode: 0o644,
            ..H::default()
        });
        t.data(&buf[..size]);
        gz.write_all(&t.buf).unwrap();
        t.buf.clear();
        written += size;
        files += 1;
    }
    gz.write_all(&[0u8; 1024]).unwrap();
    (gz.finish().unwrap(), written, files)
}

#[test]
#[ignore]
fn gzip_layer_throughput() {
    let (blob, bytes, files) = make_layer(200 << 20);
    let tar_len = {
        let mut d = flate2::read::GzDecoder::new(&blob[..]);
        std::io::copy(&mut d, &mut std::io::sink()).unwrap()
    };
    for pipelined in [true, false] {
        let mut best = f64::MAX;
        for _ in 0..3 {
            let dir =
                tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or("/tmp".into())).unwrap();
            let opts = UnpackOptions {
                pipelined,
                ..UnpackOptions::default()
            };
            let t0 = Instant::now();
            let st = unpack_layer(
                &blob[..],
                "application/vnd.oci.image.layer.v1.tar+gzip",
                dir.path(),
                &opts,
            )
            .unwrap();
            let dt = t0.elapsed().as_secs_f64();
            assert_eq!(st.tar_bytes, tar_len);
            best = best.min(dt);
        }
        println!(
            "pipelined={pipelined}: {files} files, {:.0} MB uncompressed ({:.0} MB gzip): best {:.3} s = {:.0} MB/s uncompressed, {:.0} MB/s compressed",
            tar_len as f64 / 1e6,
            blob.len() as f64 / 1e6,
            best,
            tar_len as f64 / 1e6 / best,
            blob.len() as f64 / 1e6 / best,
        );
    }
    let _ = bytes;
    if let Ok(p) = std::env::var("BENCH_SAVE") {
        std::fs::write(p, &blob).unwrap();
    }
}
