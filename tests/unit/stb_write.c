// stb_image_write's implementation, for unit tests that need PNG and JPEG
// files to decode; the library never links it. Built apart from the tests
// because Debian's copy (0.0~git20220908) shifts a signed int past its range
// in its JPEG bit writer (stbiw__jpg_writeBits), which UBSan stops at: the
// sanitizer build turns off that one check for this file only.
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STBI_WRITE_NO_STDIO
#include <stb/stb_image_write.h>
