// The compile-fail harness compiles this correct use; it must succeed, so that a broken
// include path cannot make every compile-fail case "pass".
#include <ssmq/ssmq.hpp>
using ok = ssmq::precision<ssmq::abar<8>, ssmq::weights<4, ssmq::symmetric>>;
static_assert(ok::name() == "Abar8_W4s");
static_assert(ssmq::memory_footprint<ok>().total() > 0);
static_assert(ssmq::precision_named<"all8">::name() == "all8");
int main() {}
