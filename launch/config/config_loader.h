// Loading a job: YAML file + `--set key=value` overrides -> JobConfig, with errors that name the
// key, the value and where it was set (file:line, or the --set argument). Unknown keys are
// errors with a did-you-mean suggestion. Only launch/ knows YAML; the structs stay plain.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "launch/config/job_config.h"

namespace tandem::launch {

// Reads `path`, applies `overrides` ("parallel.pp=2"; values are YAML scalars or flow
// sequences), binds every key, checks ranges and choices, then runs
// JobConfig::resolve_and_validate(world_size). Throws tandem::Error (kind kConfig) on any
// problem; the message starts with "path:line:" when the key came from the file.
JobConfig load_job_config(const std::string& path, const std::vector<std::string>& overrides, int64_t world_size);

// The world a job file lays out by itself, for commands that describe a job outside mpirun
// (simulate, plan): pp * tp * dp, with dp 1 where the file derives it (0). Binds and checks every
// key like load_job_config, but not the rules that need a world. Throws kConfig.
int64_t job_file_world(const std::string& path, const std::vector<std::string>& overrides);

// Same, from YAML text (tests); `source_name` stands in for the file name in messages.
JobConfig load_job_config_from_string(const std::string& yaml_text, const std::string& source_name,
                                      const std::vector<std::string>& overrides, int64_t world_size);

// The resolved config as YAML (every key, defaults included), for logs, check-config and the
// checkpoint manifest. Loading this text again yields an equal config.
std::string job_config_to_yaml(JobConfig config);

// Every key of `config` with its value as YAML text, dotted and in declaration order
// ({"parallel.pp", "4"}, ...): what two configs differ in (resume reports it).
std::vector<std::pair<std::string, std::string>> job_config_values(JobConfig config);

// Markdown reference of every key: type, default, bounds/choices and meaning (docs/config.md).
std::string job_config_reference_markdown();

// Names of every key, dotted ("parallel.pipeline.schedule"), in declaration order.
std::vector<std::string> job_config_keys();

}  // namespace tandem::launch
