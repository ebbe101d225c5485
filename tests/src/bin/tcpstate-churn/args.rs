//! Command line of `tcpstate-churn` (no dependencies: `--key value` pairs).
use std::time::Duration;

pub const USAGE: &str = "\
usage: tcpstate-churn [options]
  --clients N        client threads (default 2)
  --listeners N      listening addresses, one server thread each (default 4)
  --sources N        client source addresses (default 64; 0: let connect() choose)
  --close client|server   who closes first (default client)
  --rate R           offered load in connections/s over all clients (default 0: saturate)
  --duration SECS    stop after this long (default 5; at most 600)
  --count N          stop after this many connections (default 50000000)
  --netns SERVER,CLIENT   run the server in namespace SERVER and the clients in CLIENT
                     (both in /run/netns, joined by a veth pair carrying 198.18.0.0/15)
Prints one JSON line with the connections/s achieved.";

/// Who calls close() first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closer {
    Client,
    Server,
}

impl Closer {
    pub fn name(self) -> &'static str {
        match self {
            Closer::Client => "client",
            Closer::Server => "server",
        }
    }
}

#[derive(Clone, Debug)]
pub struct Options {
    pub clients: usize,
    pub listeners: usize,
    pub sources: usize,
    pub close: Closer,
    /// Connections/s over all clients; 0 saturates.
    pub rate: f64,
    pub duration: Duration,
    pub count: u64,
    /// (server, client) namespace names.
    pub netns: Option<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            clients: 2,
            listeners: 4,
            sources: 64,
            close: Closer::Client,
            rate: 0.0,
            duration: Duration::from_secs(5),
            count: 50_000_000,
            netns: None,
        }
    }
}

pub fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options::default();
    let mut it = args.iter();
    while let Some(key) = it.next() {
        if key == "-h" || key == "--help" {
            return Err(String::new());
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{key} needs a value"))?
            .as_str();
        let bad = |what: &str| format!("bad {key} `{value}`: {what}");
        let count = |max: u64| -> Result<u64, String> {
            value
                .parse::<u64>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| bad(&format!("expected a whole number up to {max}")))
        };
        match key.as_str() {
            "--clients" => o.clients = count(256)?.max(1) as usize,
            "--listeners" => o.listeners = count(250)?.max(1) as usize,
            "--sources" => o.sources = count(60_000)? as usize,
            "--close" => {
                o.close = match value {
                    "client" => Closer::Client,
                    "server" => Closer::Server,
                    _ => return Err(bad("expected client or server")),
                }
            }
            "--rate" => {
                o.rate = value
                    .parse::<f64>()
                    .ok()
                    .filter(|r| r.is_finite() && *r >= 0.0)
                    .ok_or_else(|| bad("expected connections/s, 0 to saturate"))?
            }
            "--duration" => {
                let secs = value
                    .parse::<f64>()
                    .ok()
                    .filter(|s| s.is_finite() && *s > 0.0 && *s <= 600.0)
                    .ok_or_else(|| bad("expected seconds, more than 0 and at most 600"))?;
                o.duration = Duration::from_secs_f64(secs);
            }
            "--count" => o.count = count(1 << 40)?.max(1),
            "--netns" => {
                let (server, client) = value
                    .split_once(',')
                    .filter(|(s, c)| !s.is_empty() && !c.is_empty())
                    .ok_or_else(|| bad("expected SERVER,CLIENT"))?;
                o.netns = Some((server.to_string(), client.to_string()));
            }
            _ => return Err(format!("unknown option {key}")),
        }
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn parses_every_option() {
        let o = parse(&strings(&[
            "--clients",
            "3",
            "--close",
            "server",
            "--rate",
            "10000",
            "--duration",
            "1.5",
            "--count",
            "7",
            "--netns",
            "a,b",
        ]))
        .unwrap();
        assert_eq!(o.clients, 3);
        assert_eq!(o.close, Closer::Server);
        assert_eq!(o.rate, 10_000.0);
        assert_eq!(o.duration, Duration::from_millis(1500));
        assert_eq!(o.count, 7);
        assert_eq!(o.netns, Some(("a".into(), "b".into())));
    }

    #[test]
    fn refuses_unbounded_or_unknown() {
        assert!(parse(&strings(&["--duration", "0"])).is_err());
        assert!(parse(&strings(&["--duration", "601"])).is_err());
        assert!(parse(&strings(&["--close", "both"])).is_err());
        assert!(parse(&strings(&["--what", "1"])).is_err());
        assert!(parse(&strings(&["--rate"])).is_err());
    }
}
