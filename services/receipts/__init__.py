"""The receipts receiver: provider delivery reports in, signed and mapped, out as receipt events."""
