"""The dataset-evaluation study: its config (`config`), splits and subsets (`subsets`), running the cells
(`runner`), the typed summary (`summary`), its statistics over seeds (`intervals`), the summary in words
(`text`), and the offline demo built on it (`demo`)."""

from synthgap.study.config import (
    CELL_KINDS, StudyData, StudyConfig, study_config_from_dict, load_study_config, fraction_tag, cell_names,
    cell_kind, cell_dir, is_finished, uses, same_data)
from synthgap.study.intervals import MetricStat, PairedDifference, mean_std, t_quantile_975, paired_difference
from synthgap.study.subsets import (
    holdout_split, synthetic_split, real_data, real_pool_and_val, real_subset, in_domain_data, dataset_fingerprint,
    source_records, subset_records, prepare_subsets, check_test_images)
from synthgap.study.summary import (
    SCHEMA_VERSION, TARGET_METRICS, IN_DOMAIN_METRICS, HEADLINE, NOT_LEARNED, CI_METHOD, CellRow, Comparison,
    MetricComparison, ImageSeedBootstrap, FeatureGap, FeatureGapRow, StudySummary, as_summary, read_summary,
    compare, feature_gap_summary, metric_name, metric_label)
from synthgap.study.text import conclusions, format_feature_gap, format_summary
from synthgap.study.runner import (
    epochs_for_steps, run_cell, run_seed, run_seeds_side_by_side, run_study, summarize, study_datasets,
    feature_checkpoint, data_stats, check_study_label_maps, cell_record, check_cells)

__all__ = ['CELL_KINDS', 'StudyData', 'StudyConfig', 'study_config_from_dict', 'load_study_config', 'fraction_tag',
           'cell_names', 'cell_kind', 'cell_dir', 'is_finished', 'MetricStat', 'PairedDifference', 'mean_std',
           't_quantile_975', 'paired_difference', 'holdout_split', 'synthetic_split', 'real_data',
           'real_pool_and_val', 'real_subset', 'in_domain_data', 'SCHEMA_VERSION', 'TARGET_METRICS',
           'IN_DOMAIN_METRICS', 'HEADLINE', 'NOT_LEARNED', 'CI_METHOD', 'CellRow', 'Comparison', 'MetricComparison',
           'ImageSeedBootstrap', 'FeatureGap', 'FeatureGapRow', 'StudySummary', 'as_summary', 'read_summary',
           'compare', 'feature_gap_summary', 'summarize', 'metric_name', 'metric_label', 'conclusions',
           'format_feature_gap', 'format_summary', 'epochs_for_steps', 'run_cell', 'run_seed',
           'run_seeds_side_by_side', 'run_study', 'study_datasets', 'feature_checkpoint', 'data_stats',
           'check_study_label_maps', 'cell_record', 'check_cells', 'dataset_fingerprint', 'source_records',
           'subset_records', 'prepare_subsets', 'check_test_images', 'uses', 'same_data']
