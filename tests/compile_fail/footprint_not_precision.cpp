// expect: precision_config
#include <ssmq/precision/footprint.hpp>
constexpr auto fp = ssmq::memory_footprint<int>();
