// expect: the name does not follow the grammar
#include <ssmq/precision/precision.hpp>
using bad = ssmq::precision_named<"A8_x8">;
static_assert(bad::name().size() > 0);
