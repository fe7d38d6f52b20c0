use fiedler::linalg::synthetic::*;
use fiedler::linalg::*;
#[test]
fn profile() {
    let cases: Vec<(usize, &str)> = std::env::var("CASES")
        .unwrap_or("196:clustered".into())
        .split(',')
        .map(|c| {
            let (n, k) = c.split_once(':').unwrap();
            (
                n.parse().unwrap(),
                if k == "random" { "random" } else { "clustered" },
            )
        })
        .collect();
    for (n, kind) in cases {
        let gs: Vec<Graph> = (0..16)
            .map(|i| {
                let f = if kind == "random" {
                    random_features(n, 768, (n * 1000 + i) as u64)
                } else {
                    clustered_features(
                        n,
                        768,
                        &Clusters {
                            clusters: 4,
                            shared: 0.5,
                            noise: 1.0,
                        },
                        (n * 1000 + i) as u64,
                    )
                };
                Graph::from_features(&f, n, 768, &vec![true; n], true).unwrap()
            })
            .collect();
        let reps = std::env::var("REPS")
            .map(|r| r.parse().unwrap())
            .unwrap_or(50);
        let t = std::time::Instant::now();
        let mut its = 0;
        for _ in 0..reps {
            for g in &gs {
                its += g.fiedler(Solver::Lanczos).unwrap().iterations;
            }
        }
        let dt = t.elapsed().as_secs_f64() / (reps * 16) as f64;
        let e = fiedler::linalg::tridiagonal::EVALS.swap(0, std::sync::atomic::Ordering::Relaxed); let c = fiedler::linalg::tridiagonal::CALLS.swap(0, std::sync::atomic::Ordering::Relaxed); eprintln!("evals/call {:.1} calls/graph {:.1}", e as f64 / c as f64, c as f64 / (reps*16) as f64);
        eprintln!(
            "{kind} n={n}: lanczos {:.1} us/graph, avg iterations {:.1}",
            dt * 1e6,
            its as f64 / (reps * 16) as f64
        );
    }
}
