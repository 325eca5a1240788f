"""VQA-specific AttTok parts: attribute keywords for QA pairs, vocabulary building, paper-style scoring."""
