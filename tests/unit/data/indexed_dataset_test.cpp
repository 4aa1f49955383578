// Megatron indexed dataset: round trip for every dtype code, a byte-for-byte comparison with an
// index packed by hand from the documented MMIDIDX layout, and the input errors the reader must
// report (naming the file) instead of crashing.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <functional>

#include "runtime/data/indexed_dataset.h"
#include "runtime/error.h"
#include "runtime_test_util.h"

namespace tandem::runtime {
namespace {

using testing::TempDir;

// Little-endian packers for the hand-built reference file (independent of the writer).
void put_u8(std::string& out, uint8_t v) { out.push_back(static_cast<char>(v)); }
void put_le(std::string& out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

std::string error_of(const std::function<void()>& action, ErrorKind kind = ErrorKind::kInput) {
  try {
    action();
  } catch (const Error& error) {
    EXPECT_EQ(error.kind(), kind) << error.what();
    return error.message();
  }
  ADD_FAILURE() << "no tandem::Error thrown";
  return "";
}

#define EXPECT_CONTAINS(text, part) EXPECT_NE(std::string(text).find(part), std::string::npos) << (text)

TEST(IndexedDataset, RoundTripsEveryDtypeCode) {
  TempDir dir;
  for (int code = 1; code <= 8; ++code) {
    const TokenDtype dtype = *token_dtype_from_code(code);
    SCOPED_TRACE(std::string(token_dtype_name(dtype)));
    const int64_t low = token_dtype_min_id(dtype), high = token_dtype_max_id(dtype);
    const std::vector<int64_t> first = {0, 1, high, low, 42};
    const std::vector<int64_t> second_a = {high - 1, 7};
    const std::vector<int64_t> second_b = {low + 1};
    const std::string prefix = dir / ("data_" + std::string(token_dtype_name(dtype)));
    {
      IndexedDatasetWriter writer(prefix, dtype);
      writer.add_document(first);
      writer.add_sequence(second_a);  // a document of two sequences
      writer.add_sequence(second_b);
      writer.end_document();
      writer.end_document();  // an empty document, as Megatron allows
      writer.finish();
      EXPECT_EQ(writer.num_documents(), 3);
      EXPECT_EQ(writer.num_sequences(), 3);
    }
    const IndexedDataset data = IndexedDataset::open(prefix);
    EXPECT_EQ(data.dtype(), dtype);
    EXPECT_EQ(data.num_sequences(), 3);
    EXPECT_EQ(data.num_documents(), 3);
    EXPECT_EQ(data.num_tokens(), 8);
    EXPECT_EQ(data.sequence_tokens(0), first);
    EXPECT_EQ(data.sequence_tokens(1), second_a);
    EXPECT_EQ(data.sequence_tokens(2), second_b);
    EXPECT_EQ(data.document_index(0), 0);
    EXPECT_EQ(data.document_index(1), 1);
    EXPECT_EQ(data.document_index(2), 3);
    EXPECT_EQ(data.document_index(3), 3);
    EXPECT_EQ(data.sequence_pointer(1), 5 * token_dtype_size_bytes(dtype));
    int64_t middle[2];
    data.read_tokens(0, 2, 2, middle);
    EXPECT_EQ(middle[0], high);
    EXPECT_EQ(middle[1], low);
  }
}

// The layout of the header comment in indexed_dataset.h, packed by hand: two documents of
// uint16 tokens, the second made of two sequences.
std::string reference_index() {
  std::string idx;
  idx.append("MMIDIDX\x00\x00", 9);
  put_le(idx, 1, 8);  // version
  put_u8(idx, 8);     // dtype code: uint16
  put_le(idx, 3, 8);  // sequences
  put_le(idx, 3, 8);  // document-index entries (2 documents + the leading 0)
  for (uint64_t size : {3, 2, 1}) put_le(idx, size, 4);
  for (uint64_t pointer : {0, 6, 10}) put_le(idx, pointer, 8);
  for (uint64_t entry : {0, 1, 3}) put_le(idx, entry, 8);
  return idx;
}

TEST(IndexedDataset, WriterMatchesHandPackedReferenceByteForByte) {
  TempDir dir;
  const std::string idx = reference_index();
  ASSERT_EQ(idx.size(), 34u + 3 * 4 + 3 * 8 + 3 * 8);
  std::string bin;
  for (uint64_t token : {72, 105, 257, 65535, 0, 300}) put_le(bin, token, 2);

  IndexedDatasetWriter writer(dir / "mine", TokenDtype::kUInt16);
  writer.add_document(std::vector<int64_t>{72, 105, 257});
  writer.add_sequence(std::vector<int64_t>{65535, 0});
  writer.add_sequence(std::vector<int64_t>{300});
  writer.end_document();
  writer.finish();
  EXPECT_EQ(testing::slurp(dir / "mine.idx"), idx);
  EXPECT_EQ(testing::slurp(dir / "mine.bin"), bin);

  // And the reader takes the hand-packed files as they are.
  testing::spit(dir / "ref.idx", idx);
  testing::spit(dir / "ref.bin", bin);
  const IndexedDataset data = IndexedDataset::open(dir / "ref");
  EXPECT_EQ(data.num_documents(), 2);
  EXPECT_EQ(data.sequence_tokens(0), (std::vector<int64_t>{72, 105, 257}));
  EXPECT_EQ(data.sequence_tokens(2), (std::vector<int64_t>{300}));
}

TEST(IndexedDataset, AcceptsMegatronMultimodalModes) {
  TempDir dir;
  std::string idx = reference_index();
  for (int i = 0; i < 3; ++i) put_u8(idx, 0);  // int8 mode per sequence
  std::string bin(12, '\0');
  testing::spit(dir / "mm.idx", idx);
  testing::spit(dir / "mm.bin", bin);
  EXPECT_EQ(IndexedDataset::open(dir / "mm").num_sequences(), 3);
}

TEST(IndexedDataset, ReportsMissingFilesWithTheConfigKeyAndTheFix) {
  TempDir dir;
  const std::string message = error_of([&] { IndexedDataset::open(dir / "absent", "data.path"); });
  EXPECT_CONTAINS(message, "data.path: ");
  EXPECT_CONTAINS(message, "absent.bin not found");
  EXPECT_CONTAINS(message, "tandem preprocess");
  EXPECT_FALSE(IndexedDataset::exists(dir / "absent"));
}

TEST(IndexedDataset, ReportsMalformedIndexFiles) {
  TempDir dir;
  testing::spit(dir / "x.bin", std::string(12, '\0'));
  const std::string good = reference_index();
  auto open_with = [&](const std::string& idx) {
    testing::spit(dir / "x.idx", idx);
    return error_of([&] { IndexedDataset::open(dir / "x"); });
  };
  std::string wrong_magic = good;
  wrong_magic[0] = 'X';
  EXPECT_CONTAINS(open_with(wrong_magic), "wrong magic: not a Megatron indexed dataset");
  EXPECT_CONTAINS(open_with(wrong_magic), "x.idx");

  std::string bad_dtype = good;
  bad_dtype[17] = 9;
  EXPECT_CONTAINS(open_with(bad_dtype), "unsupported dtype code 9");

  std::string bad_version = good;
  bad_version[9] = 2;
  EXPECT_CONTAINS(open_with(bad_version), "unsupported index version 2");

  const std::string truncated = open_with(good.substr(0, good.size() - 5));
  EXPECT_CONTAINS(truncated, "x.idx: truncated: header says 3 sequences");
  EXPECT_CONTAINS(truncated, "file holds only 89 bytes (94 needed)");

  std::string huge = good;  // a corrupt count must not overflow or allocate
  for (int i = 18; i < 26; ++i) huge[i] = '\xff';
  EXPECT_CONTAINS(open_with(huge), "truncated: header says 18446744073709551615 sequences");

  EXPECT_CONTAINS(open_with(good + "xy"), "2 unexpected trailing bytes");

  std::string bad_documents = good;
  bad_documents[good.size() - 8] = 2;  // last document-index entry 2 instead of 3
  EXPECT_CONTAINS(open_with(bad_documents), "the document index ends at sequence 2 but the file has 3");

  EXPECT_CONTAINS(open_with(good.substr(0, 20)), "shorter than the 34-byte header");
}

TEST(IndexedDataset, ReportsABinFileShorterThanTheIndex) {
  TempDir dir;
  testing::spit(dir / "x.idx", reference_index());
  testing::spit(dir / "x.bin", std::string(11, '\0'));
  const std::string message = error_of([&] { IndexedDataset::open(dir / "x"); });
  EXPECT_CONTAINS(message, "sequence 2 (1 tokens of uint16 at byte 10) ends past the end of");
  EXPECT_CONTAINS(message, "x.bin (11 bytes)");
}

TEST(IndexedDataset, WriterRejectsTokensOutsideTheDtype) {
  TempDir dir;
  IndexedDatasetWriter writer(dir / "narrow", TokenDtype::kUInt8);
  const std::string message = error_of([&] { writer.add_document(std::vector<int64_t>{1, 257}); });
  EXPECT_CONTAINS(message, "token 257 (position 1 of sequence 0) does not fit dtype uint8");
}

TEST(IndexedDataset, UnfinishedWriterLeavesNoIndex) {
  TempDir dir;
  {
    IndexedDatasetWriter writer(dir / "partial", TokenDtype::kUInt16);
    writer.add_document(std::vector<int64_t>{1, 2, 3});
  }  // destroyed without finish(): as if preprocess died
  EXPECT_FALSE(IndexedDataset::exists(dir / "partial"));
}

TEST(IndexedDataset, DtypeNamesAndWidths) {
  EXPECT_EQ(token_dtype_from_name("uint16"), TokenDtype::kUInt16);
  EXPECT_EQ(token_dtype_from_name("float32"), TokenDtype::kFloat32);
  EXPECT_FALSE(token_dtype_from_name("uint32").has_value());
  EXPECT_EQ(smallest_token_dtype(256), TokenDtype::kUInt8);
  EXPECT_EQ(smallest_token_dtype(259), TokenDtype::kUInt16);
  EXPECT_EQ(smallest_token_dtype(129280), TokenDtype::kInt32);  // DeepSeek-V3's vocabulary
}

TEST(IndexedDataset, CorpusStatsCountAndEntropy) {
  TempDir dir;
  IndexedDatasetWriter writer(dir / "s", TokenDtype::kUInt16);
  writer.add_document(std::vector<int64_t>{'a', 'b', 'a', 'b'});
  writer.finish();
  const CorpusStats stats = compute_corpus_stats(IndexedDataset::open(dir / "s"));
  EXPECT_EQ(stats.num_documents, 1);
  EXPECT_EQ(stats.num_tokens, 4);
  EXPECT_DOUBLE_EQ(stats.entropy_bits_per_token, 1.0);
  // With the EOD: p = 0.4, 0.4, 0.2.
  EXPECT_NEAR(stats.stream_entropy_bits_per_token, -(0.8 * std::log2(0.4) + 0.2 * std::log2(0.2)), 1e-12);
}

}  // namespace
}  // namespace tandem::runtime
