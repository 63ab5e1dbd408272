#pragma once
// ssmq: quantized small state-space models (S4D) for edge devices. This header includes the
// whole public API; each part can also be included on its own.
#include "precision/affine.hpp"
#include "precision/calibration.hpp"
#include "precision/component.hpp"
#include "precision/footprint.hpp"
#include "precision/integer_storage.hpp"
#include "precision/kernels.hpp"
#include "precision/packing.hpp"
#include "precision/paper_configs.hpp"
#include "precision/precision.hpp"
#include "precision/precision_spec.hpp"
#include "precision/quant_spec.hpp"
#include "precision/requantize.hpp"
#include "precision/rounding.hpp"
#include "s4d/shape.hpp"
