// The library's version string (set in CMakeLists.txt's project()).
#include "edgellm/version.h"

const char *el_version(void) { return EL_VERSION_STRING; }
