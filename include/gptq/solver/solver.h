#pragma once
// The solver module in one include: quantization grid, Hessian accumulation,
// factorisation, GPTQ and RTN.
#include "gptq/solver/factorization.h"
#include "gptq/solver/gptq.h"
#include "gptq/solver/hessian.h"
#include "gptq/solver/quantizer.h"
