"""The dataset-evaluation study (`runner`) and the offline demo built on it (`demo`)."""

from synthgap.study.runner import (
    CELL_KINDS, SUMMARY_COLUMNS, IN_DOMAIN_COLUMNS, HEADLINE, TEST_DATASET, NOT_LEARNED, CI_METHOD,
    StudyData, StudyConfig, study_config_from_dict, load_study_config, fraction_tag, cell_names,
    cell_kind, cell_dir, is_finished, holdout_split, synthetic_split, real_data, real_pool_and_val,
    real_subset, in_domain_data, epochs_for_steps, run_cell, run_seed, run_seeds_side_by_side,
    run_study, study_datasets, feature_checkpoint, data_stats, mean_std, t_quantile_975,
    paired_difference, compare, conclusions, feature_gap_summary, summarize, format_feature_gap,
    format_summary)

__all__ = ['CELL_KINDS', 'SUMMARY_COLUMNS', 'IN_DOMAIN_COLUMNS', 'HEADLINE', 'TEST_DATASET', 'NOT_LEARNED', 'CI_METHOD', 'StudyData', 'StudyConfig', 'study_config_from_dict', 'load_study_config', 'fraction_tag', 'cell_names', 'cell_kind', 'cell_dir', 'is_finished', 'holdout_split', 'synthetic_split', 'real_data', 'real_pool_and_val', 'real_subset', 'in_domain_data', 'epochs_for_steps', 'run_cell', 'run_seed', 'run_seeds_side_by_side', 'run_study', 'study_datasets', 'feature_checkpoint', 'data_stats', 'mean_std', 't_quantile_975', 'paired_difference', 'compare', 'conclusions', 'feature_gap_summary', 'summarize', 'format_feature_gap', 'format_summary']
