#include "server/blob_answer.hpp"

#include <gtest/gtest.h>

namespace layercache::server {
namespace {

const oci::digest d = oci::digest_of("some blob", oci::digest_algorithm::sha256);
const std::string etag = "\"" + d.str() + "\"";

TEST(BlobAnswer, NoRangeIsTheWholeBlob) {
  const auto a = plan_blob_answer(false, "", "", d, 1000);
  EXPECT_EQ(a.status, 200u);
  EXPECT_TRUE(a.ranges.empty());
  EXPECT_EQ(a.length, 1000u);
  EXPECT_EQ(a.content_type, "application/octet-stream");
  EXPECT_EQ(a.content_range, "");
}

TEST(BlobAnswer, OneRangeIsA206WithItsContentRange) {
  const auto a = plan_blob_answer(false, "bytes=10-19", "", d, 1000);
  EXPECT_EQ(a.status, 206u);
  ASSERT_EQ(a.ranges.size(), 1u);
  EXPECT_EQ(a.length, 10u);
  EXPECT_EQ(a.content_range, "bytes 10-19/1000");
  EXPECT_FALSE(a.multipart());
}

TEST(BlobAnswer, OpenAndSuffixRangesEndAtTheBlobsEnd) {
  EXPECT_EQ(plan_blob_answer(false, "bytes=990-", "", d, 1000).content_range, "bytes 990-999/1000");
  EXPECT_EQ(plan_blob_answer(false, "bytes=-5", "", d, 1000).content_range, "bytes 995-999/1000");
  // A last position past the end is the end (RFC 9110), even one that overflows.
  EXPECT_EQ(plan_blob_answer(false, "bytes=0-99999999999999999999", "", d, 1000).status, 206u);
}

TEST(BlobAnswer, SeveralRangesAreMultipartWithTheirExactLength) {
  const auto a = plan_blob_answer(false, "bytes=0-9,100-199", "", d, 1000);
  EXPECT_EQ(a.status, 206u);
  ASSERT_TRUE(a.multipart());
  EXPECT_EQ(a.content_type, "multipart/byteranges; boundary=" + a.boundary);
  EXPECT_EQ(a.content_range, "");
  std::string body;
  for (const auto& r : a.ranges) body += a.part_header(r, 1000) + std::string(r.length(), 'x');
  body += a.closing();
  EXPECT_EQ(a.length, body.size());
  EXPECT_NE(a.part_header(a.ranges[1], 1000).find("Content-Range: bytes 100-199/1000"),
            std::string::npos);
}

TEST(BlobAnswer, RangesWorthTheWholeBlobAreItOnce) {
  const auto a = plan_blob_answer(false, "bytes=0-,0-,0-", "", d, 1000);
  EXPECT_EQ(a.status, 200u);
  EXPECT_EQ(a.length, 1000u);
}

TEST(BlobAnswer, NothingSatisfiableIs416WithTheSize) {
  for (const auto* range : {"bytes=1000-", "bytes=5000-6000", "bytes=99999999999999999999-"}) {
    const auto a = plan_blob_answer(false, range, "", d, 1000);
    EXPECT_EQ(a.status, 416u) << range;
    EXPECT_EQ(a.content_range, "bytes */1000") << range;
  }
}

TEST(BlobAnswer, TooManyRangesAre416) {
  std::string many = "bytes=0-0";
  for (int i = 1; i < 2000; ++i) many += "," + std::to_string(i) + "-" + std::to_string(i);
  EXPECT_EQ(plan_blob_answer(false, many, "", d, 100000).status, 416u);
}

TEST(BlobAnswer, AMalformedRangeOrAnotherUnitIsIgnored) {
  EXPECT_EQ(plan_blob_answer(false, "bytes=abc", "", d, 1000).status, 200u);
  EXPECT_EQ(plan_blob_answer(false, "items=0-1", "", d, 1000).status, 200u);
  EXPECT_EQ(plan_blob_answer(false, "bytes=9-1", "", d, 1000).status, 200u);
}

TEST(BlobAnswer, IfRangeOfAnotherEtagAsksForTheWholeBlob) {
  EXPECT_EQ(plan_blob_answer(false, "bytes=0-9", "\"sha256:other\"", d, 1000).status, 200u);
  EXPECT_EQ(plan_blob_answer(false, "bytes=0-9", etag, d, 1000).status, 206u);
}

TEST(BlobAnswer, AHeadIgnoresRanges) {
  const auto a = plan_blob_answer(true, "bytes=0-9", "", d, 1000);
  EXPECT_EQ(a.status, 200u);
  EXPECT_EQ(a.length, 1000u);
}

TEST(BlobAnswer, RefusalsGetTheirOciCodes) {
  EXPECT_EQ(blob_refusal_code(404), "BLOB_UNKNOWN");
  EXPECT_EQ(blob_refusal_code(401), "UNAUTHORIZED");
  EXPECT_EQ(blob_refusal_code(403), "DENIED");
  EXPECT_EQ(blob_refusal_code(429), "TOOMANYREQUESTS");
  EXPECT_EQ(blob_refusal_code(500), "UNAVAILABLE");
}

}  // namespace
}  // namespace layercache::server
