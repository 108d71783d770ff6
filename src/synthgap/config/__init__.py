"""One config type (`Config`: plain dataclasses in `schema`, each section checking its own fields), one
loader (`load`: paths, URIs, packaged recipes, dotted overrides, datasetinsights' YAML recognised once),
the translation of datasetinsights' estimator YAML (`datasetinsights`), and the packaged recipes
(``recipes/*.yaml``)."""

from synthgap.config.load import (apply_overrides, dump_config, load_config, packaged_configs, parse_override,
                                  read_config)
from synthgap.config.schema import (RENAMED, Config, ConfigError, DataConfig, EvalConfig, ModelConfig,
                                    OptimizerConfig, TrainConfig, config_from_dict, from_dict)

__all__ = ["RENAMED", "Config", "ConfigError", "DataConfig", "EvalConfig", "ModelConfig", "OptimizerConfig",
           "TrainConfig", "apply_overrides", "config_from_dict", "dump_config", "from_dict", "load_config",
           "packaged_configs", "parse_override", "read_config"]
