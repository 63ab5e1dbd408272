// expect: percentile must lie in
#include <ssmq/precision/precision.hpp>
using bad = ssmq::precision<ssmq::abar<8, ssmq::percentile<40'000>>>;
static_assert(bad::name().size() > 0);
