// expect: split_re_im applies to the complex tensors Abar, Bbar, Cbar only
#include <ssmq/precision/precision.hpp>
using bad = ssmq::precision<ssmq::weights<4, ssmq::split_re_im>>;
static_assert(bad::name().size() > 0);
