# lit configuration for llmc: dialect, pass and llmc end-to-end tests.
import os

import lit.formats
from lit.llvm import llvm_config

config.name = "llmc"
config.test_format = lit.formats.ShTest(not llvm_config.use_lit_shell)
config.suffixes = [".mlir", ".test"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.llmc_test_bin_dir, "lit")
config.excludes = ["fixtures", "unit", "tools", "golden", "text", "fuzz", "gpu", "CMakeLists.txt", "lit.cfg.py"]
config.environment["FILECHECK_OPTS"] = "--enable-var-scope"

config.substitutions.append(("%fixtures", os.path.join(config.llmc_src_dir, "test", "fixtures")))
config.substitutions.append(("%models", os.path.join(config.llmc_src_dir, "models")))
config.substitutions.append(("%repo", config.llmc_src_dir))
# Real tokenizer files, fetched by the tokenizer_fetch ctest fixture.
config.substitutions.append(("%tokenizers", config.llmc_tokenizers))
llvm_config.with_environment("PATH", config.llvm_tools_dir, append_path=True)
llvm_config.with_environment("PATH", config.llmc_bin_dir, append_path=True)
llvm_config.with_environment("PATH", config.llmc_test_bin_dir, append_path=True)
llvm_config.use_default_substitutions()

if config.llmc_have_cuda:
    config.available_features.add("nvrtc")
