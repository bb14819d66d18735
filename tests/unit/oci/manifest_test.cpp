#include "oci/manifest.hpp"

#include <gtest/gtest.h>

#include <ostream>
#include <string>

#include "oci/media_types.hpp"

namespace layercache::oci {
namespace {

const std::string da = "sha256:" + std::string(64, 'a');
const std::string db = "sha256:" + std::string(64, 'b');
const std::string dc = "sha256:" + std::string(64, 'c');

std::string desc(const std::string& media_type, const std::string& digest, std::string size,
                 const std::string& extra = {}) {
  return R"({"mediaType":")" + media_type + R"(","digest":")" + digest + R"(","size":)" + size +
         extra + "}";
}

const std::string oci_image =
    R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":)" +
    desc("application/vnd.oci.image.config.v1+json", da, "7023") + R"(,"layers":[)" +
    desc("application/vnd.oci.image.layer.v1.tar+gzip", db, "32654") + "," +
    desc("application/vnd.oci.image.layer.v1.tar+zstd", dc, "16724") +
    R"(],"annotations":{"com.example.key1":"value1"}})";

const std::string docker_v2 =
    R"({"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json",)"
    R"("config":)" +
    desc("application/vnd.docker.container.image.v1+json", da, "1469") + R"(,"layers":[)" +
    desc("application/vnd.docker.image.rootfs.diff.tar.gzip", db, "3370706") + "]}";

const std::string oci_index_doc =
    R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[)" +
    desc("application/vnd.oci.image.manifest.v1+json", da, "7143",
         R"(,"platform":{"architecture":"arm64","os":"linux","variant":"v8"})") +
    "," +
    desc("application/vnd.oci.image.manifest.v1+json", db, "7682",
         R"(,"platform":{"architecture":"amd64","os":"linux"})") +
    "]}";

TEST(manifest, oci_image_manifest) {
  const auto m = parse_manifest(oci_image);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->media_type, media_types::oci_manifest);
  EXPECT_FALSE(m->is_index());
  ASSERT_TRUE(m->config.has_value());
  EXPECT_EQ(m->config->media_type, media_types::oci_config);
  EXPECT_EQ(m->config->digest.str(), da);
  EXPECT_EQ(m->config->size, 7023u);
  ASSERT_EQ(m->layers.size(), 2u);
  EXPECT_EQ(m->layers[0].media_type, media_types::oci_layer_tar_gzip);
  EXPECT_EQ(m->layers[0].digest.str(), db);
  EXPECT_EQ(m->layers[0].size, 32654u);
  EXPECT_EQ(m->layers[1].media_type, media_types::oci_layer_tar_zstd);
  EXPECT_EQ(m->layers[1].size, 16724u);
  EXPECT_TRUE(m->manifests.empty());
  EXPECT_FALSE(m->subject.has_value());
  // Its blobs: the config, then each layer digest once (db is listed again below).
  const auto again =
      parse_manifest(oci_image.substr(0, oci_image.rfind(']')) + "," +
                     desc("application/vnd.oci.image.layer.v1.tar+gzip", db, "32654") + "]}");
  ASSERT_TRUE(again.has_value());
  ASSERT_EQ(again->layers.size(), 3u);
  const auto blobs = again->blobs();
  ASSERT_EQ(blobs.size(), 3u);
  EXPECT_EQ(blobs[0].digest.str(), da);
  EXPECT_EQ(blobs[1].digest.str(), db);
  EXPECT_EQ(blobs[2].size, 16724u);
}

TEST(manifest, docker_schema2) {
  const auto m = parse_manifest(docker_v2);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->media_type, media_types::docker_manifest_v2);
  EXPECT_FALSE(m->is_index());
  ASSERT_TRUE(m->config.has_value());
  EXPECT_EQ(m->config->media_type, media_types::docker_config);
  ASSERT_EQ(m->layers.size(), 1u);
  EXPECT_EQ(m->layers[0].media_type, media_types::docker_layer_tar_gzip);
}

TEST(manifest, oci_index_with_platforms) {
  const auto m = parse_manifest(oci_index_doc);
  ASSERT_TRUE(m.has_value());
  EXPECT_TRUE(m->is_index());
  EXPECT_FALSE(m->config.has_value());
  ASSERT_EQ(m->manifests.size(), 2u);
  EXPECT_EQ(m->manifests[0].platform_os, "linux");
  EXPECT_EQ(m->manifests[0].platform_architecture, "arm64");
  EXPECT_EQ(m->manifests[0].platform_variant, "v8");
  EXPECT_EQ(m->manifests[1].platform_architecture, "amd64");
  EXPECT_FALSE(m->manifests[1].platform_variant.has_value());
}

TEST(manifest, docker_manifest_list) {
  const std::string doc =
      R"({"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json",)"
      R"("manifests":[)" +
      desc("application/vnd.docker.distribution.manifest.v2+json", da, "528",
           R"(,"platform":{"architecture":"ppc64le","os":"linux"})") +
      "]}";
  const auto m = parse_manifest(doc);
  ASSERT_TRUE(m.has_value());
  EXPECT_TRUE(m->is_index());
  ASSERT_EQ(m->manifests.size(), 1u);
  EXPECT_EQ(m->manifests[0].media_type, media_types::docker_manifest_v2);
}

TEST(manifest, artifact_with_subject) {
  const std::string doc =
      R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",)"
      R"("artifactType":"application/vnd.example+type","config":)" +
      desc("application/vnd.oci.empty.v1+json",
           "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a", "2") +
      R"(,"layers":[],"subject":)" +
      desc("application/vnd.oci.image.manifest.v1+json", dc, "1234") + "}";
  const auto m = parse_manifest(doc);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->config->media_type, media_types::oci_empty);
  EXPECT_TRUE(m->layers.empty());
  ASSERT_TRUE(m->subject.has_value());
  EXPECT_EQ(m->subject->digest.str(), dc);
}

TEST(manifest, index_entry_artifact_type) {
  const std::string doc = R"({"schemaVersion":2,"manifests":[)" +
                          desc("application/vnd.oci.image.manifest.v1+json", da, "10",
                               R"(,"artifactType":"application/vnd.example.sbom")") +
                          "]}";
  const auto m = parse_manifest(doc);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->media_type, media_types::oci_index);  // inferred
  EXPECT_EQ(m->manifests[0].artifact_type, "application/vnd.example.sbom");
}

TEST(manifest, schema1) {
  const std::string doc = R"({"schemaVersion":1,"name":"library/hello","tag":"latest",)"
                          R"("fsLayers":[{"blobSum":")" +
                          da + R"("},{"blobSum":")" + db +
                          R"("}],"history":[],"signatures":[{"header":{}}]})";
  const auto m = parse_manifest(doc);
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->media_type, media_types::docker_manifest_v1_signed);
  ASSERT_EQ(m->layers.size(), 2u);
  EXPECT_EQ(m->layers[0].digest.str(), da);
  EXPECT_EQ(m->layers[1].digest.str(), db);
  EXPECT_FALSE(m->config.has_value());

  const auto plain =
      parse_manifest(R"({"schemaVersion":1,"fsLayers":[{"blobSum":")" + da + R"("}]})",
                     "application/vnd.docker.distribution.manifest.v1+json");
  ASSERT_TRUE(plain.has_value());
  EXPECT_EQ(plain->media_type, media_types::docker_manifest_v1);
}

struct content_type_case {
  std::string name;
  std::string document;
  std::string content_type;
  std::string expected_media_type;  // empty: must be rejected
  friend void PrintTo(const content_type_case& c, std::ostream* os) { *os << c.name; }
};

class manifest_content_type : public testing::TestWithParam<content_type_case> {};

TEST_P(manifest_content_type, chooses_media_type) {
  const auto& c = GetParam();
  const auto m = parse_manifest(c.document, c.content_type);
  if (c.expected_media_type.empty()) {
    EXPECT_FALSE(m.has_value());
  } else {
    ASSERT_TRUE(m.has_value());
    EXPECT_EQ(m->media_type, c.expected_media_type);
  }
}

const std::string untyped_image = R"({"schemaVersion":2,"config":)" +
                                  desc("application/vnd.oci.image.config.v1+json", da, "1") +
                                  R"(,"layers":[]})";
const std::string untyped_index = R"({"schemaVersion":2,"manifests":[]})";

INSTANTIATE_TEST_SUITE_P(
    table, manifest_content_type,
    testing::Values(
        content_type_case{"document_wins", oci_image, std::string(media_types::docker_manifest_v2),
                          std::string(media_types::oci_manifest)},
        content_type_case{"from_content_type", untyped_image,
                          std::string(media_types::docker_manifest_v2),
                          std::string(media_types::docker_manifest_v2)},
        content_type_case{"content_type_params_case", untyped_image,
                          "Application/VND.docker.distribution.manifest.v2+json; charset=utf-8",
                          std::string(media_types::docker_manifest_v2)},
        content_type_case{"generic_content_type_ignored", untyped_image, "application/json",
                          std::string(media_types::oci_manifest)},
        content_type_case{"inferred_image", untyped_image, "",
                          std::string(media_types::oci_manifest)},
        content_type_case{"inferred_index", untyped_index, "", std::string(media_types::oci_index)},
        content_type_case{"index_content_type", untyped_index,
                          std::string(media_types::docker_manifest_list),
                          std::string(media_types::docker_manifest_list)},
        content_type_case{"image_shape_index_type", untyped_image,
                          std::string(media_types::oci_index), ""},
        content_type_case{"index_shape_image_type", untyped_index,
                          std::string(media_types::oci_manifest), ""}),
    [](const testing::TestParamInfo<content_type_case>& info) { return info.param.name; });

struct reject_case {
  std::string name;
  std::string document;
  friend void PrintTo(const reject_case& c, std::ostream* os) { *os << c.name; }
};

class manifest_reject : public testing::TestWithParam<reject_case> {};

TEST_P(manifest_reject, returns_nullopt) {
  EXPECT_FALSE(parse_manifest(GetParam().document).has_value())
      << GetParam().document.substr(0, 300);
}

std::string image_with_layer(const std::string& layer) {
  return R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":)" +
         desc("a/b", da, "1") + R"(,"layers":[)" + layer + "]}";
}

std::string nested(std::size_t depth) {
  return R"({"schemaVersion":2,"x":)" + std::string(depth, '[') + std::string(depth, ']') + "}";
}

INSTANTIATE_TEST_SUITE_P(
    table, manifest_reject,
    testing::Values(
        reject_case{"empty", ""}, reject_case{"not_json", "hello"},
        reject_case{"truncated", oci_image.substr(0, oci_image.size() - 1)},
        reject_case{"trailing_garbage", oci_image + "x"}, reject_case{"array", "[]"},
        reject_case{"string", "\"x\""}, reject_case{"null", "null"},
        reject_case{"nul_byte", std::string("{\"schemaVersion\":2\0}", 20)},
        reject_case{"invalid_utf8", "{\"schemaVersion\":2,\"x\":\"\xff\"}"},
        reject_case{"no_schema_version", R"({"manifests":[]})"},
        reject_case{"schema_version_3", R"({"schemaVersion":3,"manifests":[]})"},
        reject_case{"schema_version_string", R"({"schemaVersion":"2","manifests":[]})"},
        reject_case{"schema_version_float", R"({"schemaVersion":2.0,"manifests":[]})"},
        reject_case{"media_type_not_string", R"({"schemaVersion":2,"mediaType":1,"manifests":[]})"},
        reject_case{
            "image_without_config",
            R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]})"},
        reject_case{
            "image_without_layers",
            R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":)" +
                desc("a/b", da, "1") + "}"},
        reject_case{"index_without_manifests",
                    R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json"})"},
        reject_case{
            "ambiguous_index_with_layers",
            R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[],"layers":[]})"},
        reject_case{
            "ambiguous_image_with_manifests",
            R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":)" +
                desc("a/b", da, "1") + R"(,"layers":[],"manifests":[]})"},
        reject_case{"ambiguous_unknown_type",
                    R"({"schemaVersion":2,"mediaType":"x/y","manifests":[],"layers":[]})"},
        reject_case{
            "layers_not_array",
            R"({"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":)" +
                desc("a/b", da, "1") + R"(,"layers":{}})"},
        reject_case{"bad_digest", image_with_layer(desc("a/b", "sha256:abc", "1"))},
        reject_case{"uppercase_digest",
                    image_with_layer(desc("a/b", "sha256:" + std::string(64, 'A'), "1"))},
        reject_case{"digest_not_string",
                    image_with_layer(R"({"mediaType":"a/b","digest":5,"size":1})")},
        reject_case{"missing_digest", image_with_layer(R"({"mediaType":"a/b","size":1})")},
        reject_case{"missing_size",
                    image_with_layer(R"({"mediaType":"a/b","digest":")" + db + R"("})")},
        reject_case{"negative_size", image_with_layer(desc("a/b", db, "-1"))},
        reject_case{"float_size", image_with_layer(desc("a/b", db, "1.5"))},
        reject_case{"exponent_size", image_with_layer(desc("a/b", db, "1e3"))},
        reject_case{"huge_size", image_with_layer(desc("a/b", db, "99999999999999999999999"))},
        reject_case{"string_size", image_with_layer(desc("a/b", db, "\"1\""))},
        reject_case{"media_type_not_string_in_descriptor",
                    image_with_layer(R"({"mediaType":7,"digest":")" + db + R"(","size":1})")},
        reject_case{"layer_not_object", image_with_layer("1")},
        reject_case{"platform_not_object",
                    image_with_layer(desc("a/b", db, "1", R"(,"platform":"linux")"))},
        reject_case{"platform_os_not_string",
                    image_with_layer(desc("a/b", db, "1", R"(,"platform":{"os":1})"))},
        reject_case{"artifact_type_not_string",
                    image_with_layer(desc("a/b", db, "1", R"(,"artifactType":[])"))},
        reject_case{"bad_subject",
                    R"({"schemaVersion":2,"manifests":[],"subject":{"digest":"x","size":1}})"},
        reject_case{"schema1_without_fs_layers", R"({"schemaVersion":1})"},
        reject_case{"schema1_bad_blob_sum", R"({"schemaVersion":1,"fsLayers":[{"blobSum":"x"}]})"},
        reject_case{
            "schema1_type_with_version_2",
            R"({"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v1+prettyjws","fsLayers":[]})"},
        reject_case{
            "schema1_version_with_v2_type",
            R"({"schemaVersion":1,"mediaType":"application/vnd.oci.image.manifest.v1+json","fsLayers":[]})"},
        reject_case{"too_deep", nested(100)}, reject_case{"very_deep", nested(100000)},
        reject_case{"unterminated_string", R"({"schemaVersion":2,"mediaType":"abc)"}),
    [](const testing::TestParamInfo<reject_case>& info) { return info.param.name; });

TEST(manifest, moderate_nesting_in_unknown_fields_is_fine) {
  EXPECT_TRUE(parse_manifest(R"({"schemaVersion":2,"manifests":[],"annotations":{"x":[[[[1]]]]}})")
                  .has_value());
}

TEST(manifest, large_sizes) {
  const auto m = parse_manifest(image_with_layer(desc("a/b", db, "18446744073709551615")));
  ASSERT_TRUE(m.has_value());
  EXPECT_EQ(m->layers[0].size, 18446744073709551615u);
}

TEST(media_types, classification) {
  EXPECT_TRUE(is_index_media_type(media_types::oci_index));
  EXPECT_TRUE(is_index_media_type(media_types::docker_manifest_list));
  EXPECT_TRUE(is_index_media_type("application/vnd.oci.image.index.v1+json; charset=utf-8"));
  EXPECT_FALSE(is_index_media_type(media_types::oci_manifest));
  EXPECT_TRUE(is_manifest_media_type(media_types::oci_manifest));
  EXPECT_TRUE(is_manifest_media_type(media_types::docker_manifest_v2));
  EXPECT_TRUE(is_manifest_media_type(media_types::docker_manifest_v1_signed));
  EXPECT_TRUE(is_manifest_media_type(media_types::docker_manifest_v1));
  EXPECT_TRUE(is_manifest_media_type(" APPLICATION/VND.OCI.IMAGE.MANIFEST.V1+JSON "));
  EXPECT_FALSE(is_manifest_media_type(media_types::oci_index));
  EXPECT_FALSE(is_manifest_media_type(media_types::oci_config));
  EXPECT_FALSE(is_manifest_media_type(""));
  EXPECT_FALSE(is_manifest_media_type("application/vnd.oci.image.manifest.v1+jsonx"));
}

TEST(media_types, default_accept) {
  const std::string expected = std::string(media_types::oci_manifest) + ", " +
                               std::string(media_types::oci_index) + ", " +
                               std::string(media_types::docker_manifest_v2) + ", " +
                               std::string(media_types::docker_manifest_list) + ", " +
                               std::string(media_types::docker_manifest_v1_signed);
  EXPECT_EQ(default_manifest_accept(), expected);
}

}  // namespace
}  // namespace layercache::oci
