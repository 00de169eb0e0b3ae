#include "gptq/solver/grid.h"

namespace gptq::solver {

MinMaxIntegerGrid::MinMaxIntegerGrid(QuantConfig config) : config_(config) { validate(config_); }

}  // namespace gptq::solver
