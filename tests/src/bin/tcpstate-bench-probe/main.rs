//! `tcpstate-bench-probe`: the parts of `cargo xtask bench` that must run
//! in a release build of the tcpstate library, each in its own process (so
//! that its memory and time are its own). Each prints one JSON line.
//!
//!   tcpstate-bench-probe model-memory CONNECTIONS
//!       resident memory of the connection model holding CONNECTIONS open
//!       (ESTABLISHED) synthetic connections
//!   tcpstate-bench-probe decode TRANSITIONS
//!       `recording::bench::bench_decode`: decoding speed of a synthetic
//!       recording (its temporary file goes to $TMPDIR)
//!   tcpstate-bench-probe make-recording TRANSITIONS FILE
//!       writes a synthetic recording of TRANSITIONS transitions to FILE
//!       (which must not exist), for timing `tcpstate stat --input FILE`
//!   tcpstate-bench-probe views stat|serve FILE
//!       replays FILE through `stat`'s or `serve`'s view, refreshed every
//!       second of event time as live (the reports go to stdout first)
mod model_memory;
mod recording;
mod views;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: tcpstate-bench-probe model-memory N | decode N | make-recording N FILE | views stat|serve FILE";
    let number = |i: usize| -> u64 {
        match args.get(i).and_then(|s| s.parse().ok()) {
            Some(n) if n > 0 => n,
            _ => {
                eprintln!("{usage}");
                std::process::exit(2);
            }
        }
    };
    let result = match (args.first().map(String::as_str), args.len()) {
        (Some("model-memory"), 2) => model_memory::run(number(1)),
        (Some("decode"), 2) => Ok(recording::decode(number(1))),
        (Some("make-recording"), 3) => recording::make(number(1), args[2].as_ref()),
        (Some("views"), 3) => views::run(&args[1], args[2].as_ref()),
        _ => {
            eprintln!("{usage}");
            std::process::exit(2);
        }
    };
    match result {
        Ok(line) => println!("{line}"),
        Err(e) => {
            eprintln!("tcpstate-bench-probe: error: {e}");
            std::process::exit(1);
        }
    }
}
