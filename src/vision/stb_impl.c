// The stb_image decoder (Debian's libstb-dev header), compiled here with only
// the two formats we accept and our dimension cap; image.c checks each file's
// structure before handing it over.
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_JPEG
#define STBI_ONLY_PNG
#define STBI_NO_STDIO
#define STBI_NO_LINEAR
#define STBI_NO_HDR
#define STBI_MAX_DIMENSIONS 16384  // = EL_IMAGE_MAX_SIDE
#include <stb/stb_image.h>
