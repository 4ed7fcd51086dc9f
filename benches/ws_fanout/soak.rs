//! The soak run (`--soak SECS`, not a CI test): 1 000 subscribers of one channel, one publisher
//! sending `transmitPublish` at a steady 20 publishes/s (20 000 deliveries/s, 100-byte payloads)
//! for SECS seconds after the usual 1 s warm-up, against each server of `--servers` (default
//! `smol`), one fresh process each.
//!
//! Every delivery is checked as in the other cases (lost, reordered, duplicated must be 0). The
//! server's RSS is sampled every second of the delivery phase; the growth is (RSS at the end −
//! RSS at 60 s) / RSS at 60 s, with the maximum after 60 s shown too: the first minute is the
//! warm-up of the allocator's arenas and the sockets' buffers, after which a server that does not
//! leak stays flat. Target: growth ≤ 5 %. Exits 1 when a run lost, reordered or duplicated a
//! message, failed, or grew more than 5 %.

use super::*;

/// When the steady state starts.
const STEADY_FROM_S: f64 = 60.0;
/// The largest acceptable growth after [`STEADY_FROM_S`].
const MAX_GROWTH: f64 = 0.05;

/// The RSS sample nearest to `at` seconds.
fn rss_at(trace: &[(f64, u64)], at: f64) -> u64 {
    trace.iter().min_by(|a, b| (a.0 - at).abs().total_cmp(&(b.0 - at).abs())).map_or(0, |s| s.1)
}

pub(crate) fn run(rt: &tokio::runtime::Runtime, env: &Env, servers: &[String], secs: f64) -> ! {
    let mut case = rate("soak-c1000-100B-rate20k", 1000, 1, 100, 20_000.0, secs, WARMUP);
    case.trace = true;
    println!("# WebSocket soak run\n");
    println!(
        "- {} subscribers, 1 channel, 100 B payloads, {} publishes/s (20 000 deliveries/s) for {secs:.0} s; \
         machine {}, load average at start: {}",
        case.subs,
        20_000 / case.subs,
        cpu_model(),
        loadavg()
    );
    println!("- RSS growth = (RSS at the end − RSS at {STEADY_FROM_S:.0} s) / RSS at {STEADY_FROM_S:.0} s\n");
    println!(
        "| server | time s | deliveries | lost | ooo | dup | p50 ms | p99 ms | max ms | RSS at 60 s MiB | max RSS after 60 s MiB | RSS at end MiB | growth |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut bad = Vec::new();
    let mut traces = Vec::new();
    for server in servers {
        let r = run_case(rt, env, &case, server);
        let steady = rss_at(&r.rss_trace, STEADY_FROM_S);
        let end = r.rss_trace.last().map_or(0, |s| s.1);
        let max_after = r.rss_trace.iter().filter(|s| s.0 >= STEADY_FROM_S).map(|s| s.1).max().unwrap_or(0);
        let growth = if steady > 0 { (end as f64 - steady as f64) / steady as f64 } else { f64::NAN };
        let mib = |k: u64| format!("{:.1}", k as f64 / 1024.0);
        println!(
            "| {server} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:+.1} % |",
            r.time_s,
            r.deliveries,
            r.lost,
            r.ooo,
            r.dup,
            sig(r.p50_ms),
            sig(r.p99_ms),
            sig(r.max_ms),
            mib(steady),
            mib(max_after),
            mib(end),
            100.0 * growth
        );
        let _ = std::io::stdout().flush();
        if let Some(e) = &r.error {
            bad.push(format!("{server}: {e}"));
        }
        if r.lost + r.ooo + r.dup > 0 {
            bad.push(format!("{server}: lost {}, reordered {}, duplicated {}", r.lost, r.ooo, r.dup));
        }
        if growth.is_nan() || growth > MAX_GROWTH {
            bad.push(format!("{server}: RSS grew {:.1} % after the first minute", 100.0 * growth));
        }
        traces.push((server.clone(), r.rss_trace));
    }
    println!("\nRSS (MiB) every 60 s of the delivery phase:\n");
    for (server, trace) in &traces {
        let points: Vec<String> = (0..=(secs as usize / 60))
            .map(|m| format!("{:.1}", rss_at(trace, m as f64 * 60.0) as f64 / 1024.0))
            .collect();
        println!("- {server}: {}", points.join(", "));
    }
    println!("\nLoad average at end: {}", loadavg());
    if bad.is_empty() {
        std::process::exit(0);
    }
    for b in &bad {
        eprintln!("ws_fanout --soak: {b}");
    }
    std::process::exit(1);
}
