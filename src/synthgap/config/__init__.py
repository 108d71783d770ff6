"""One config type (`Config`, plain dataclasses in `schema`), its loader and dotted overrides, the
translation of datasetinsights' estimator YAML (`datasetinsights`), and the packaged recipes (`recipes/`)."""

from synthgap.config.schema import (RENAMED, Config, ConfigError, DataConfig, EvalConfig, ModelConfig,
                                    OptimizerConfig, TrainConfig, apply_overrides, config_from_dict, dump_config,
                                    from_dict, load_config, packaged_configs, parse_override)

__all__ = ["RENAMED", "Config", "ConfigError", "DataConfig", "EvalConfig", "ModelConfig", "OptimizerConfig",
           "TrainConfig", "apply_overrides", "config_from_dict", "dump_config", "from_dict", "load_config",
           "packaged_configs", "parse_override"]
