//! The two summaries every report uses: median / max, and a quantile of a
//! sorted sample.

/// Median and maximum of `samples` (the upper median for an even count),
/// or `None` when there are none.
pub fn median_max<T: Ord + Copy>(samples: &[T]) -> Option<(T, T)> {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    Some((*sorted.get(sorted.len() / 2)?, *sorted.last()?))
}

/// The value at quantile `q` (0.0..=1.0, nearest rank) of `sorted`, which
/// must be sorted; `None` when it is empty.
pub fn quantile<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    let last = sorted.len().checked_sub(1)?;
    Some(sorted[((last as f64) * q.clamp(0.0, 1.0)).round() as usize])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_quantiles() {
        assert_eq!(median_max(&[3, 1, 2]), Some((2, 3)));
        assert_eq!(median_max(&[4, 1, 3, 2]), Some((3, 4)));
        assert_eq!(median_max::<u8>(&[]), None);
        let sorted: Vec<u32> = (0..=100).collect();
        assert_eq!(quantile(&sorted, 0.5), Some(50));
        assert_eq!(quantile(&sorted, 0.99), Some(99));
        assert_eq!(quantile(&sorted, 2.0), Some(100));
        assert_eq!(quantile::<u32>(&[], 0.5), None);
    }
}
