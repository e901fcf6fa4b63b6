//! Criterion benchmarks of watchnext live in `benches/`; run them with
//! `cargo bench -p watchnext-benches`. `BENCHMARKS.md` at the repository root
//! records the figures, each with the command that reproduces it.

/// Shared set-up of the generator benches: stream a synthetic world's log
/// into a generator's `observe` in batches, keeping held-out queries (query
/// video, the user's recent watches, device, time) from the tail.
pub mod feed {
    use watchnext_core::{
        History, RequestContext, RequestId,
        event::{Event, EventKind, EventSink},
        generator::Generator,
        request::{HistoryEntry, Query},
    };
    use watchnext_world::World;

    pub const BATCH: usize = 10_000;
    pub const HISTORY: usize = 20;
    pub const QUERIES: usize = 2_000;
    pub const MAX: usize = 100;

    /// Feeds a generator in batches and keeps held-out queries from the tail of the stream.
    #[allow(missing_debug_implementations)] // holds a borrowed world; nothing to print
    pub struct Feed<'a> {
        pub world: &'a World,
        pub generator: &'a dyn Generator,
        pub batch: Vec<Event>,
        /// Last watches of each user (dense video indices), newest last.
        pub history: Vec<Vec<u32>>,
        /// Events pushed so far; queries are taken after `tail_from`.
        pub pushed: u64,
        pub tail_from: u64,
        pub queries: Vec<Query>,
    }

    impl EventSink for Feed<'_> {
        type Error = std::convert::Infallible;

        fn push(&mut self, event: Event) -> Result<(), Self::Error> {
            self.pushed += 1;
            if let EventKind::Watch { .. } = event.kind
                && let (Some(u), Some(v)) =
                    (self.world.user_index(event.user.as_str()), self.world.video_index(event.video.as_str()))
            {
                let h = &mut self.history[u as usize];
                if self.pushed >= self.tail_from && self.queries.len() < QUERIES && !h.is_empty() {
                    self.queries.push(query(self.world, &event, h));
                }
                h.push(v);
                if h.len() > HISTORY {
                    h.remove(0);
                }
            }
            self.batch.push(event);
            if self.batch.len() >= BATCH {
                self.generator.observe(&self.batch);
                self.batch.clear();
            }
            Ok(())
        }
    }

    pub fn query(world: &World, event: &Event, history: &[u32]) -> Query {
        Query {
            request_id: RequestId::parse("request_id", "bench").expect("valid id"),
            user: event.user.clone(),
            query_video: event.video.clone(),
            device: event.device,
            history: History(
                history
                    .iter()
                    .map(|&v| HistoryEntry {
                        video: world.video_id(v).clone(),
                        watched_at_ms: event.timestamp_ms,
                        seconds_watched: 60.0,
                    })
                    .collect(),
            ),
            context: RequestContext { time_ms: event.timestamp_ms, ..RequestContext::default() },
        }
    }
}

/// This machine's arithmetic peak, measured in the run that divides by it
/// (machines of one kind differ by 2.5×, so a peak from another machine or
/// another day makes a wrong share).
///
/// - **fp32**: independent chains of fused multiply-adds, one multiply-add
///   per lane counted as one operation — 16 AVX-512 accumulators (enough
///   to cover the FMA latency on two ports), or 12 AVX2 ones where AVX-512
///   is missing;
/// - **int8**: AVX-512 VNNI `vpdpbusd` (u8 × i8 → i32, four products per
///   32-bit lane), 16 accumulators; each product counted as one
///   multiply-add, the unit an INT8 graph's work is counted in.
///
/// Each figure is the median of seven runs of about 40 ms on the calling
/// thread (one vCPU).
#[allow(unsafe_code)] // SIMD kernels behind runtime CPU-feature checks.
pub mod peak {
    use std::time::Instant;

    /// One measured rate.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct Rate {
        /// Multiply-adds per second (G = 1e9).
        pub per_second: f64,
        /// The instruction set the kernel used.
        pub isa: &'static str,
    }

    impl Rate {
        pub fn giga(&self) -> f64 {
            self.per_second / 1e9
        }
    }

    const ITERS: u64 = 1 << 20;

    fn median(mut xs: Vec<f64>) -> f64 {
        xs.sort_by(f64::total_cmp);
        xs[xs.len() / 2]
    }

    /// Median rate of `kernel(ITERS)`, which does `per_iter` multiply-adds
    /// per iteration (a warm-up run first: clocks and caches).
    fn measure(per_iter: f64, mut kernel: impl FnMut(u64) -> f32) -> f64 {
        std::hint::black_box(kernel(ITERS / 8));
        let rates: Vec<f64> = (0..7)
            .map(|_| {
                let started = Instant::now();
                std::hint::black_box(kernel(std::hint::black_box(ITERS)));
                per_iter * ITERS as f64 / started.elapsed().as_secs_f64()
            })
            .collect();
        median(rates)
    }

    /// The fp32 multiply-add peak of one thread.
    pub fn fp32() -> Rate {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F (checked above).
                return Rate { per_second: measure(16.0 * 16.0, |n| unsafe { x86::fma_avx512(n) }), isa: "avx512f" };
            }
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                // SAFETY: the CPU has AVX2 and FMA (checked above).
                return Rate { per_second: measure(12.0 * 8.0, |n| unsafe { x86::fma_avx2(n) }), isa: "avx2+fma" };
            }
        }
        Rate { per_second: measure(8.0, scalar_fma), isa: "scalar" }
    }

    /// The int8 dot-product peak of one thread; `None` without AVX-512 VNNI.
    pub fn int8() -> Option<Rate> {
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512vnni") {
                // SAFETY: the CPU has AVX-512F and AVX-512 VNNI (checked above).
                let per_second = measure(16.0 * 64.0, |n| unsafe { x86::dot_vnni(n) });
                return Some(Rate { per_second, isa: "avx512vnni" });
            }
        }
        None
    }

    fn scalar_fma(iters: u64) -> f32 {
        let mut acc = [1.0f32; 8];
        for _ in 0..iters {
            for a in &mut acc {
                *a = a.mul_add(0.999_999, 1e-7);
            }
        }
        acc.iter().sum()
    }

    #[cfg(target_arch = "x86_64")]
    mod x86 {
        use std::arch::x86_64::{
            __m256, __m512, __m512i, _mm256_add_ps, _mm256_fmadd_ps, _mm256_set1_ps, _mm256_storeu_ps,
            _mm512_add_epi32, _mm512_add_ps, _mm512_dpbusd_epi32, _mm512_fmadd_ps, _mm512_reduce_add_epi32,
            _mm512_reduce_add_ps, _mm512_set1_epi8, _mm512_set1_ps, _mm512_setzero_si512,
        };

        #[target_feature(enable = "avx512f")]
        pub fn fma_avx512(iters: u64) -> f32 {
            let (a, b) = (_mm512_set1_ps(0.999_999), _mm512_set1_ps(1e-7));
            let mut acc: [__m512; 16] = [_mm512_set1_ps(1.0); 16];
            for _ in 0..iters {
                for x in &mut acc {
                    *x = _mm512_fmadd_ps(*x, a, b);
                }
            }
            let mut sum = acc[0];
            for x in &acc[1..] {
                sum = _mm512_add_ps(sum, *x);
            }
            _mm512_reduce_add_ps(sum)
        }

        #[target_feature(enable = "avx2,fma")]
        pub fn fma_avx2(iters: u64) -> f32 {
            let (a, b) = (_mm256_set1_ps(0.999_999), _mm256_set1_ps(1e-7));
            let mut acc: [__m256; 12] = [_mm256_set1_ps(1.0); 12];
            for _ in 0..iters {
                for x in &mut acc {
                    *x = _mm256_fmadd_ps(*x, a, b);
                }
            }
            let mut sum = acc[0];
            for x in &acc[1..] {
                sum = _mm256_add_ps(sum, *x);
            }
            let mut lanes = [0.0f32; 8];
            // SAFETY: `lanes` holds the 8 floats the store writes.
            unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
            lanes.iter().sum()
        }

        #[target_feature(enable = "avx512f,avx512vnni")]
        pub fn dot_vnni(iters: u64) -> f32 {
            let (a, b) = (_mm512_set1_epi8(3), _mm512_set1_epi8(-2));
            let mut acc: [__m512i; 16] = [_mm512_setzero_si512(); 16];
            for _ in 0..iters {
                for x in &mut acc {
                    *x = _mm512_dpbusd_epi32(*x, a, b);
                }
            }
            let mut sum = acc[0];
            for x in &acc[1..] {
                sum = _mm512_add_epi32(sum, *x);
            }
            _mm512_reduce_add_epi32(sum) as f32
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn the_kernels_compute_what_they_count() {
            // One step of every chain: 1 · 0.999999 + 1e-7 per lane.
            let lanes = |n: f32| n * 0.999_999_1;
            assert!((super::scalar_fma(1) - lanes(8.0)).abs() < 1e-4);
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx512f") {
                    // SAFETY: checked above.
                    let v = unsafe { super::x86::fma_avx512(1) };
                    assert!((v - lanes(256.0)).abs() < 1e-3, "{v}");
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: checked above.
                    let v = unsafe { super::x86::fma_avx2(1) };
                    assert!((v - lanes(96.0)).abs() < 1e-3, "{v}");
                }
                if std::arch::is_x86_feature_detected!("avx512f") && std::arch::is_x86_feature_detected!("avx512vnni") {
                    // 16 accumulators × 16 lanes × 4 products of 3 · (−2), twice.
                    // SAFETY: checked above.
                    assert_eq!(unsafe { super::x86::dot_vnni(2) }, -12_288.0);
                }
            }
        }
    }
}
