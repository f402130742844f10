# SPDX-FileCopyrightText: 2026-present grit-components developers
#
# SPDX-License-Identifier: Apache-2.0
from haystack_integrations.components.embedders.grit.document_embedder import GritDocumentEmbedder
from haystack_integrations.components.embedders.grit.text_embedder import GritTextEmbedder

__all__ = ["GritDocumentEmbedder", "GritTextEmbedder"]
