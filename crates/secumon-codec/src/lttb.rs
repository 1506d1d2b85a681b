//! Largest-Triangle-Three-Buckets downsampling (Steinarsson, 2013): keeps the first and last
//! point and, from each of `threshold − 2` equal-count buckets, the point forming the largest
//! triangle with the previously kept point and the next bucket's average. Peaks survive, unlike
//! with averaging.

/// Indexes of the points to keep, ascending. Returns every index when `threshold` ≥ n or < 3.
pub fn lttb(xs: &[f64], ys: &[f64], threshold: usize) -> Vec<usize> {
    let n = xs.len().min(ys.len());
    if threshold >= n || threshold < 3 {
        return (0..n).collect();
    }
    let mut keep = Vec::with_capacity(threshold);
    keep.push(0);
    let every = (n - 2) as f64 / (threshold - 2) as f64;
    let mut a = 0usize;
    for i in 0..threshold - 2 {
        // Average of the next bucket (the last point for the final bucket).
        let next_start = ((i + 1) as f64 * every) as usize + 1;
        let next_end = (((i + 2) as f64 * every) as usize + 1).min(n);
        let (avg_x, avg_y) = if next_start < next_end {
            let len = (next_end - next_start) as f64;
            (
                xs[next_start..next_end].iter().sum::<f64>() / len,
                ys[next_start..next_end].iter().sum::<f64>() / len,
            )
        } else {
            (xs[n - 1], ys[n - 1])
        };
        let start = (i as f64 * every) as usize + 1;
        let end = (((i + 1) as f64 * every) as usize + 1).min(n - 1);
        let (ax, ay) = (xs[a], ys[a]);
        let mut best = start;
        let mut best_area = -1.0;
        for j in start..end.max(start + 1).min(n - 1) {
            let area = ((ax - avg_x) * (ys[j] - ay) - (ax - xs[j]) * (avg_y - ay)).abs();
            if area > best_area {
                best_area = area;
                best = j;
            }
        }
        keep.push(best);
        a = best;
    }
    keep.push(n - 1);
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_endpoints_and_threshold_points() {
        let xs: Vec<f64> = (0..1000).map(|i| i as f64).collect();
        let ys: Vec<f64> = xs.iter().map(|x| (x / 20.0).sin()).collect();
        let k = lttb(&xs, &ys, 100);
        assert_eq!(k.len(), 100);
        assert_eq!(k[0], 0);
        assert_eq!(k[99], 999);
        assert!(k.windows(2).all(|w| w[0] < w[1]), "indexes ascend");
    }

    #[test]
    fn keeps_a_single_spike() {
        let xs: Vec<f64> = (0..10_000).map(|i| i as f64).collect();
        let mut ys = vec![1.0; 10_000];
        ys[4321] = 500.0;
        let k = lttb(&xs, &ys, 50);
        assert!(k.contains(&4321), "the spike survives downsampling");
    }

    #[test]
    fn small_inputs_are_returned_whole() {
        assert_eq!(lttb(&[1.0, 2.0], &[3.0, 4.0], 10), vec![0, 1]);
        assert_eq!(lttb(&[], &[], 10), Vec::<usize>::new());
        assert_eq!(lttb(&[1.0, 2.0, 3.0, 4.0], &[1.0, 2.0, 3.0, 4.0], 2), vec![0, 1, 2, 3]);
    }
}
