#include "model/autocast.h"

#include <ATen/autocast_mode.h>

namespace tandem::model {

AutocastScope::AutocastScope(c10::DeviceType device_type, c10::ScalarType dtype, bool enabled)
    : device_type_(device_type), enabled_(enabled), previous_dtype_(dtype) {
  if (!enabled_) return;
  previous_enabled_ = at::autocast::is_autocast_enabled(device_type_);
  previous_dtype_ = at::autocast::get_autocast_dtype(device_type_);
  at::autocast::set_autocast_enabled(device_type_, true);
  at::autocast::set_autocast_dtype(device_type_, dtype);
  at::autocast::increment_nesting();
}

AutocastScope::~AutocastScope() {
  if (!enabled_) return;
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
  at::autocast::set_autocast_enabled(device_type_, previous_enabled_);
  at::autocast::set_autocast_dtype(device_type_, previous_dtype_);
}

AutocastOffScope::AutocastOffScope(c10::DeviceType device_type)
    : device_type_(device_type), previous_enabled_(at::autocast::is_autocast_enabled(device_type)) {
  at::autocast::set_autocast_enabled(device_type_, false);
}

AutocastOffScope::~AutocastOffScope() { at::autocast::set_autocast_enabled(device_type_, previous_enabled_); }

}  // namespace tandem::model
